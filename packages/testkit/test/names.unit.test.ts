import { afterEach, describe, expect, it, vi } from 'vitest';
import { testTarget, uniqueName } from '../src/index.js';

describe('uniqueName', () => {
  it('keeps only [a-z0-9-] and differs between calls', () => {
    const a = uniqueName('My Pool_1!');
    expect(a).toMatch(/^my-pool-1-[a-z0-9]+$/);
    expect(uniqueName('My Pool_1!')).not.toBe(a);
  });
});

describe('testTarget', () => {
  afterEach(() => vi.unstubAllEnvs());

  it('defaults to standalone and rejects unknown values', () => {
    vi.stubEnv('KEYPOOL_TEST_TARGET', '');
    expect(testTarget()).toBe('standalone');
    vi.stubEnv('KEYPOOL_TEST_TARGET', 'cluster');
    expect(testTarget()).toBe('cluster');
    vi.stubEnv('KEYPOOL_TEST_TARGET', 'sentinel');
    expect(() => testTarget()).toThrow(/standalone/);
  });
});
