/**
 * The error guards recognise keypool errors by their brand and code, not by instanceof, so an error
 * thrown by a second installed copy of @keypool/core (another version under node_modules of some
 * dependency) is still recognised.
 */
import { describe, expect, it } from 'vitest';
import {
  KeyNotFoundError,
  KeyPoolError,
  RedisUnavailableError,
  isKeyNotFound,
  isKeyPoolError,
  isPoolExhausted,
  isRedisUnavailable,
  isScriptError,
  ScriptError,
} from '../src/index.js';

const BRAND = Symbol.for('keypool.error');

/** What a KeyNotFoundError of another copy of the package looks like: its own classes, the same brand. */
class OtherCopyError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'KeyNotFoundError';
    this.code = code;
  }
}
Object.defineProperty(OtherCopyError.prototype, BRAND, { value: true });

describe('error guards', () => {
  it('recognise errors of this copy', () => {
    const e = new KeyNotFoundError('abc');
    expect(isKeyPoolError(e)).toBe(true);
    expect(isKeyNotFound(e)).toBe(true);
    expect(isRedisUnavailable(e)).toBe(false);
    expect(isScriptError(new ScriptError('acquire', { cause: new Error('boom') }))).toBe(true);
  });

  it('recognise an error of a second copy (another class, same brand) by its code', () => {
    const e = new OtherCopyError('KEY_NOT_FOUND', 'no key with id "abc" in the pool');
    expect(e).not.toBeInstanceOf(KeyPoolError);
    expect(isKeyPoolError(e)).toBe(true);
    expect(isKeyNotFound(e)).toBe(true);
    expect(isPoolExhausted(e)).toBe(false);
  });

  it('recognise a plain object carrying the brand and a code (an error that crossed a realm)', () => {
    const e = { [BRAND]: true, code: 'REDIS_UNAVAILABLE', message: 'Redis unavailable' };
    expect(isRedisUnavailable(e)).toBe(true);
    expect(isKeyNotFound(e)).toBe(false);
  });

  it('do not take an unbranded look-alike, nor a brand without a code', () => {
    const lookAlike = Object.assign(new Error('no key'), { name: 'KeyNotFoundError', code: 'KEY_NOT_FOUND' });
    expect(isKeyNotFound(lookAlike)).toBe(false);
    expect(isKeyPoolError(lookAlike)).toBe(false);
    expect(isKeyPoolError({ [BRAND]: true })).toBe(false);
    for (const v of [null, undefined, 'KEY_NOT_FOUND', 42]) expect(isKeyPoolError(v)).toBe(false);
  });

  it('the brand is not an own property: inspect and JSON show the error as before', () => {
    const e = new RedisUnavailableError('Redis unavailable for pool "p" (x)');
    expect(Object.getOwnPropertySymbols(e)).toEqual([]);
    expect(JSON.parse(JSON.stringify(e))).toEqual({ name: 'RedisUnavailableError', code: 'REDIS_UNAVAILABLE' });
  });
});
