import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, isKeyPoolError } from '../src/errors.js';
import { classify, realTokens, type Outcome, type OutcomeClass } from '../src/outcome.js';

describe('classify', () => {
  it.each<[number, OutcomeClass]>([
    [200, 'ok'],
    [201, 'ok'],
    [204, 'ok'],
    [400, 'client_error'],
    [404, 'client_error'],
    [413, 'client_error'],
    [422, 'client_error'],
    [401, 'auth'],
    [403, 'auth'],
    [408, 'server_error'],
    [429, 'rate_limited'],
    [500, 'server_error'],
    [502, 'server_error'],
    [503, 'server_error'],
    [599, 'server_error'],
  ])('status %i -> %s', (status, cls) => {
    expect(classify({ status })).toBe(cls);
  });

  it.each<[Outcome['error'], OutcomeClass]>([
    ['timeout', 'server_error'],
    ['network', 'server_error'],
    ['broken_stream', 'server_error'],
    ['aborted', 'aborted'],
    ['unused', 'unused'],
  ])('error %s -> %s', (error, cls) => {
    expect(classify({ error })).toBe(cls);
  });

  it('lets an error kind win over a status (a stream that broke after a 200)', () => {
    expect(classify({ status: 200, error: 'broken_stream' })).toBe('server_error');
    expect(classify({ status: 200, error: 'aborted' })).toBe('aborted');
  });

  it('throws InvalidArgumentError naming what to pass when there is neither status nor error', () => {
    let err: unknown;
    try {
      classify({});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(isKeyPoolError(err)).toBe(true);
    expect((err as InvalidArgumentError).code).toBe('INVALID_ARGUMENT');
    expect((err as Error).message).toBe(
      'release needs an HTTP status (100-599) or an error kind (timeout, network, broken_stream, aborted, unused); got status=undefined error=undefined',
    );
  });

  it('throws InvalidArgumentError for a status outside 100-599', () => {
    expect(() => classify({ status: 42 })).toThrow(InvalidArgumentError);
    expect(() => classify({ status: 42 })).toThrow(
      'release needs an HTTP status (100-599) or an error kind (timeout, network, broken_stream, aborted, unused); got status=42 error=undefined',
    );
    for (const status of [0, 99, 600, 200.5, Number.NaN, -1]) {
      expect(() => classify({ status }), String(status)).toThrow(InvalidArgumentError);
    }
  });

  it('throws for an unknown error kind without status', () => {
    expect(() => classify({ error: 'boom' as never })).toThrow(/got status=undefined error=boom/);
  });
});

describe('realTokens', () => {
  it('returns the real usage when the provider reported it', () => {
    expect(realTokens({ status: 200, usage: { promptTokens: 120, completionTokens: 30 } }, 'ok')).toEqual({ input: 120, output: 30 });
    expect(realTokens({ status: 429, usage: { promptTokens: 7, completionTokens: 0 } }, 'rate_limited')).toEqual({ input: 7, output: 0 });
    expect(realTokens({ error: 'aborted', usage: { promptTokens: 50, completionTokens: 5 } }, 'aborted')).toEqual({ input: 50, output: 5 });
  });

  it('fills a missing half of usage with 0 and clamps negatives to 0', () => {
    expect(realTokens({ status: 200, usage: { completionTokens: 9 } }, 'ok')).toEqual({ input: 0, output: 9 });
    expect(realTokens({ status: 200, usage: { promptTokens: 9 } }, 'ok')).toEqual({ input: 9, output: 0 });
    expect(realTokens({ status: 200, usage: { promptTokens: -5, completionTokens: -1 } }, 'ok')).toEqual({ input: 0, output: 0 });
  });

  it('keeps the estimate (null) when usage is unknown and the call may have been billed', () => {
    expect(realTokens({ status: 200 }, 'ok')).toBeNull();
    expect(realTokens({ status: 200, usage: {} }, 'ok')).toBeNull();
    expect(realTokens({ error: 'aborted' }, 'aborted')).toBeNull();
    expect(realTokens({ error: 'broken_stream' }, 'server_error')).toBeNull();
    expect(realTokens({ error: 'timeout' }, 'server_error')).toBeNull();
  });

  it('an unused lease (nothing went upstream) reconciles to zero tokens, not the estimate', () => {
    expect(realTokens({ error: 'unused' }, 'unused')).toEqual({ input: 0, output: 0 });
  });

  it('charges nothing for failures providers do not bill', () => {
    for (const o of [{ status: 429 }, { status: 500 }, { status: 503 }, { status: 400 }, { status: 401 }, { status: 408 }, { error: 'network' as const }]) {
      expect(realTokens(o, classify(o)), JSON.stringify(o)).toEqual({ input: 0, output: 0 });
    }
  });
});
