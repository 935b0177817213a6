import { describe, expect, it } from 'vitest';
import { burstsOf, formatPath, parseKeySpec, parsePoolConfig } from '../src/config.js';
import { ConfigError, isConfigError } from '../src/errors.js';

const S1 = 'sk-proj-Q7vXk2LmN9pR4tW8yZ1aB3cD5eF6';
const S2 = 'sk-proj-H4jK8mN2pQ6rS0tU3vW7xY1zA5bC';

/** The ConfigError thrown by parsePoolConfig (fails the test if none is thrown). */
function errorOf(input: unknown, source?: string): ConfigError {
  try {
    parsePoolConfig(input, source);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected parsePoolConfig to throw');
}

/** Every 8-character window of a secret. */
function fragments(secret: string, size = 8): string[] {
  const out: string[] = [];
  for (let i = 0; i + size <= secret.length; i++) out.push(secret.slice(i, i + size));
  return out;
}

function expectNoSecret(text: string, secret: string) {
  expect(text).not.toContain(secret);
  // skip the common "sk-proj-" prefix window; any other 8-char piece would be key material
  for (const f of fragments(secret).filter((f) => f !== 'sk-proj-')) expect(text).not.toContain(f);
}

describe('parsePoolConfig defaults', () => {
  it('fills every section from an empty object', () => {
    const c = parsePoolConfig({});
    expect(c.pool).toBe('default');
    expect(c.keys).toEqual([]);
    expect(c.prices).toEqual({});
    expect(c.leaseTimeoutMs).toBe(30_000);
    expect(c.reservationTimeoutMs).toBe(600_000);
    expect(c.concurrencyRecheckMs).toBe(100);
    expect(c.candidates).toBe(2);
    expect(c.breaker).toEqual({ failures: 5, errorRate: 0.5, minRequests: 20, cooldownMs: 5000, maxCooldownMs: 300_000 });
    expect(c.health.windowMs).toBe(60_000);
    expect(c.health.degradedScore).toBe(0.25);
    expect(c.cooling).toEqual({ defaultMs: 1000, maxMs: 600_000 });
    expect(c.redisDown).toEqual({ policy: 'fail-closed', fleetSize: 1, timeoutMs: 1000 });
    expect(c.limits).toEqual({ windowMarginMs: 20, learn: true });
  });

  it('fills key defaults and keeps what was given', () => {
    const c = parsePoolConfig({ pool: 'prod', keys: [{ secret: S1, models: ['gpt-4o'], rpm: 500 }], breaker: { failures: 3 } });
    expect(c.pool).toBe('prod');
    expect(c.keys[0]).toEqual({
      secret: S1,
      models: ['gpt-4o'],
      provider: 'openai',
      baseURL: 'https://api.openai.com/v1',
      rpm: 500,
      tpm: 0,
      tokenWindow: 0,
      maxConcurrent: 0,
      weight: 1,
    });
    // a partial section keeps its other defaults
    expect(c.breaker).toEqual({ failures: 3, errorRate: 0.5, minRequests: 20, cooldownMs: 5000, maxCooldownMs: 300_000 });
  });

  it('defaults a budget period to month', () => {
    const c = parsePoolConfig({ keys: [{ secret: S1, models: ['m'], budget: { usd: 10 } }] });
    expect(c.keys[0]!.budget).toEqual({ usd: 10, period: 'month' });
  });
});

describe('parsePoolConfig errors (the message the user reads)', () => {
  it('priority: a share over 0.9, half a request of headroom, a tenant name with a space, a weight of 0', () => {
    const e = errorOf({ priority: { keepFree: { low: 1.5 }, headroom: { low: 0.5 }, weights: { 'two words': 1, ok: 0 } } });
    expect(e.issues.map((i) => i.path)).toEqual(['priority.keepFree.low', 'priority.headroom.low', 'priority.weights.two words', 'priority.weights.ok']);
    expect(parsePoolConfig({}).priority).toEqual({ keepFree: { low: 0.2, normal: 0 }, headroom: { low: 1, normal: 0 }, higherWaitedMs: 1000, reserveAheadMs: 0, spread: true, tenantWindowMs: 2000, weights: {} });
  });

  it('lists several problems at once, each with its path', () => {
    const e = errorOf({
      keys: [
        { secret: S1, models: ['gpt-4o'] },
        { secret: S2, models: ['gpt-4o'], rpm: -5 },
      ],
      breaker: { cooldownMs: 5 },
    });
    expect(e.code).toBe('CONFIG_INVALID');
    expect(isConfigError(e)).toBe(true);
    expect(e.issues.map((i) => i.path)).toEqual(['keys[1].rpm', 'breaker.cooldownMs']);
    expect(e.message).toBe(
      'invalid keypool config (2 problems):\n' +
        '  - keys[1].rpm: Too small: expected number to be >=0\n' +
        '  - breaker.cooldownMs: Too small: expected number to be >=10',
    );
  });

  it('reports schema problems and cross-field problems together', () => {
    const e = errorOf({
      keys: [
        { secret: S1, models: ['gpt-4o'] },
        { secret: S1, models: ['gpt-4o'] },
        { secret: S2, models: ['gpt-4o'], rpm: -1 },
      ],
    });
    expect(e.message).toBe(
      'invalid keypool config (2 problems):\n' +
        '  - keys[2].rpm: Too small: expected number to be >=0\n' +
        '  - keys[1].secret: same secret and baseURL as keys[0]; list each key once',
    );
  });

  it('rejects an unknown top-level field (strict)', () => {
    expect(errorOf({ keys: [], leaseTimeout: 1000 }).message).toBe(
      'invalid keypool config (1 problem):\n  - (root): Unrecognized key: "leaseTimeout"',
    );
  });

  it('rejects an unknown key field (strict), naming the field but not its value', () => {
    const e = errorOf({ keys: [{ secret: S1, models: ['gpt-4o'], apiKey: S2 }] });
    expect(e.message).toBe('invalid keypool config (1 problem):\n  - keys[0]: Unrecognized key: "apiKey"');
    expectNoSecret(e.message, S2);
  });

  it('rejects a duplicate secret without printing it', () => {
    const e = errorOf({
      keys: [
        { secret: S1, models: ['gpt-4o'] },
        { secret: S2, models: ['gpt-4o'] },
        { secret: S1, models: ['gpt-4o-mini'] },
      ],
    });
    expect(e.message).toBe('invalid keypool config (1 problem):\n  - keys[2].secret: same secret and baseURL as keys[0]; list each key once');
    expect(e.issues).toEqual([{ path: 'keys[2].secret', message: 'same secret and baseURL as keys[0]; list each key once' }]);
    expectNoSecret(e.message, S1);
    expectNoSecret(JSON.stringify(e.issues), S1);
  });

  it('takes the same secret for two base URLs as two keys', () => {
    const cfg = parsePoolConfig({ keys: [{ secret: S1, models: ['m'] }, { secret: S1, models: ['m'], baseURL: 'https://proxy.internal/v1' }] });
    expect(cfg.keys).toHaveLength(2);
  });

  it('upstreams.allow refuses a key sent elsewhere, naming the key by name and hint and what to add', () => {
    const allow = ['https://api.openai.com', 'HTTPS://api.groq.com/'];
    const cfg = parsePoolConfig({ upstreams: { allow }, keys: [{ secret: S1, models: ['m'] }, { secret: S2, models: ['m'], baseURL: 'https://api.groq.com/openai/v1' }] });
    expect(cfg.upstreams.allow).toEqual(['https://api.openai.com', 'https://api.groq.com']);
    const e = errorOf({ upstreams: { allow }, keys: [{ secret: S1, models: ['m'] }, { secret: S2, name: 'evil', models: ['m'], baseURL: 'http://10.0.0.9:8080/v1' }, { secret: S1, models: ['m'], baseURL: 'https://api.openai.com.attacker.example/v1' }] });
    expect(e.message).toBe(
      'invalid keypool config (2 problems):\n' +
        '  - keys[1].baseURL: key "evil" (sk-proj-...A5bC): origin http://10.0.0.9:8080 is not in upstreams.allow [https://api.openai.com, https://api.groq.com]; add "http://10.0.0.9:8080" to upstreams.allow to send this key there\n' +
        '  - keys[2].baseURL: key sk-proj-...5eF6: origin https://api.openai.com.attacker.example is not in upstreams.allow [https://api.openai.com, https://api.groq.com]; add "https://api.openai.com.attacker.example" to upstreams.allow to send this key there',
    );
    expectNoSecret(e.message, S1);
    expectNoSecret(e.message, S2);
    // unset: any origin, as before
    expect(parsePoolConfig({ keys: [{ secret: S1, models: ['m'], baseURL: 'http://10.0.0.9:8080/v1' }] }).upstreams.allow).toBeUndefined();
  });

  it('upstreams.allow takes origins only', () => {
    const e = errorOf({ upstreams: { allow: ['https://api.openai.com/v1', 'api.openai.com', 'ftp://x.example', 'https://u:p@x.example'] } });
    expect(e.issues.map((i) => i.path)).toEqual(['upstreams.allow[0]', 'upstreams.allow[1]', 'upstreams.allow[2]', 'upstreams.allow[3]']);
    expect(e.issues[0]!.message).toBe('must be an origin: scheme://host[:port], no path (e.g. https://api.openai.com)');
  });

  it('a key baseURL is http(s) and holds no user name or password (it is shown in status and stored in Redis)', () => {
    const e = errorOf({
      keys: [
        { secret: S1, models: ['m'], baseURL: 'https://proxyuser:hunter2-pass@proxy.example/v1' },
        { secret: S2, models: ['m'], baseURL: 'file:///etc/passwd' },
      ],
    });
    expect(e.issues).toEqual([
      { path: 'keys[0].baseURL', message: 'must not hold a user name or password (they would show in status): put credentials in the secret' },
      { path: 'keys[1].baseURL', message: 'must be an http:// or https:// URL' },
    ]);
    expect(e.message).not.toContain('hunter2');
  });

  it('rejects a bad pool name, saying which characters are allowed', () => {
    expect(errorOf({ pool: 'my pool!' }).message).toBe(
      'invalid keypool config (1 problem):\n  - pool: use 1-64 letters, digits, "_", "." or "-"',
    );
    expect(errorOf({ pool: '' }).issues[0]!.path).toBe('pool');
    expect(errorOf({ pool: 'x'.repeat(65) }).issues[0]!.path).toBe('pool');
    expect(parsePoolConfig({ pool: 'a.b_c-1' }).pool).toBe('a.b_c-1');
  });

  it('rejects rpmBurst (and tpmBurst) without the rate it bursts', () => {
    expect(errorOf({ keys: [{ secret: S1, models: ['gpt-4o'], rpmBurst: 5 }] }).message).toBe(
      'invalid keypool config (1 problem):\n  - keys[0].rpmBurst: rpmBurst needs rpm',
    );
    expect(errorOf({ keys: [{ secret: S1, models: ['gpt-4o'], tpmBurst: 5000 }] }).message).toBe(
      'invalid keypool config (1 problem):\n  - keys[0].tpmBurst: tpmBurst needs tpm',
    );
    expect(parsePoolConfig({ keys: [{ secret: S1, models: ['gpt-4o'], rpm: 60, rpmBurst: 5 }] }).keys[0]!.rpmBurst).toBe(5);
  });

  it('rejects an empty models list', () => {
    expect(errorOf({ keys: [{ secret: S1, models: [] }] }).message).toBe(
      'invalid keypool config (1 problem):\n  - keys[0].models: list at least one model this key may serve',
    );
  });

  it('names the source it was given', () => {
    expect(errorOf({ pool: '?' }, 'keypool.yaml').message).toBe(
      'invalid keypool.yaml (1 problem):\n  - pool: use 1-64 letters, digits, "_", "." or "-"',
    );
  });

  it('never puts a secret given in the config into an error message', () => {
    const bad: unknown[] = [
      { keys: [{ secret: S1, models: ['gpt-4o'] }, { secret: S1, models: ['gpt-4o'] }] },
      { keys: [{ secret: S1, models: [] }] },
      { keys: [{ secret: S1, models: ['gpt-4o'], rpm: -1, tpm: 1.5 }] },
      { keys: [{ secret: S1, models: ['gpt-4o'], baseURL: S1 }] },
      { keys: [{ secret: S1, models: ['gpt-4o'], name: S1.repeat(4) }] },
      { keys: [{ secret: S1, models: ['gpt-4o'], provider: 7 }] },
      { keys: [{ secret: S1, models: ['gpt-4o'], budget: { usd: -1, period: S1 } }] },
      { keys: [{ secret: S1, models: ['gpt-4o'], apiKey: S1 }] },
      { keys: [{ secret: S1, models: ['gpt-4o'] }], token: S1 },
      { keys: [{ secret: S1, models: ['gpt-4o'], weight: S1 }] },
      { keys: [{ secret: S1, models: ['gpt-4o'], rpmBurst: 3 }], pool: `${S1}!` },
      { keys: [S1] },
      { keys: S1 },
      { keys: [{ secret: S1, models: S1 }] },
      { keys: [{ secret: S1, models: ['gpt-4o'] }], redisDown: { policy: S1 } },
      { keys: [{ secret: S1, models: ['gpt-4o'] }], prices: { 'gpt-4o': { input: S1, output: 1 } } },
    ];
    for (const input of bad) {
      const e = errorOf(input);
      expectNoSecret(e.message, S1);
      expectNoSecret(JSON.stringify(e.issues), S1);
    }
    // a secret too short to be valid is not echoed either
    const short = errorOf({ keys: [{ secret: 'Zq7#xW', models: ['gpt-4o'] }] });
    expect(short.message).toBe('invalid keypool config (1 problem):\n  - keys[0].secret: must be the provider API key (8 characters or more)');
    expect(short.message).not.toContain('Zq7#xW');
  });
});

describe('parseKeySpec', () => {
  it('prefixes paths with key', () => {
    try {
      parseKeySpec({ secret: S1, models: [], rpm: -1 });
      expect.unreachable();
    } catch (e) {
      expect((e as ConfigError).message).toBe(
        'invalid key (2 problems):\n' +
          '  - key.models: list at least one model this key may serve\n' +
          '  - key.rpm: Too small: expected number to be >=0',
      );
    }
  });
});

describe('formatPath', () => {
  it('renders zod paths as people write them', () => {
    expect(formatPath(['keys', 1, 'rpm'])).toBe('keys[1].rpm');
    expect(formatPath(['breaker', 'cooldownMs'])).toBe('breaker.cooldownMs');
    expect(formatPath(['keys', 0, 'budget', 'usd'])).toBe('keys[0].budget.usd');
    expect(formatPath([])).toBe('');
  });
});

describe('burstsOf', () => {
  it('defaults the request bucket to 2 seconds of rpm, at least 1', () => {
    expect(burstsOf({ rpm: 60, tpm: 0 }).rb).toBe(2);
    expect(burstsOf({ rpm: 600, tpm: 0 }).rb).toBe(20);
    expect(burstsOf({ rpm: 10, tpm: 0 }).rb).toBe(1);
    expect(burstsOf({ rpm: 1, tpm: 0 }).rb).toBe(1);
    expect(burstsOf({ rpm: 100, tpm: 0 }).rb).toBe(4); // ceil(200/60)
  });

  it('defaults the token bucket to max(10 s of tpm, min(tpm, 32768))', () => {
    expect(burstsOf({ rpm: 0, tpm: 1000 }).tb).toBe(1000);
    expect(burstsOf({ rpm: 0, tpm: 90_000 }).tb).toBe(32_768);
    expect(burstsOf({ rpm: 0, tpm: 1_000_000 }).tb).toBe(166_667);
  });

  it('is 0 for an unlimited rate and keeps explicit bursts', () => {
    expect(burstsOf({ rpm: 0, tpm: 0 })).toEqual({ rb: 0, tb: 0 });
    expect(burstsOf({ rpm: 600, tpm: 90_000, rpmBurst: 4, tpmBurst: 5000 })).toEqual({ rb: 4, tb: 5000 });
  });
});
