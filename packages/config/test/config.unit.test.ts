/**
 * The gateway config loader: every invalid config has a test with the exact message the operator reads.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, isConfigError, parsePoolConfig } from '@keypool/core';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { LogSink } from '@keypool/testkit/log-sink';
import { GatewayFileSchema, REDACT, loadGatewayConfig, parseByteSize, type GatewayConfig } from '../src/index.js';

const S1 = 'sk-proj-Q7vXk2LmN9pR4tW8yZ1aB3cD5eF6';
const S2 = 'sk-proj-H4jK8mN2pQ6rS0tU3vW7xY1zA5bC';
const TOKEN = 'adm-5f2c9e1b7a3d4c6e8f0a2b4c';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Writes `yaml` to a fresh temp dir as keypool.yaml and returns its path. */
function write(yaml: string, name = 'keypool.yaml'): string {
  const dir = mkdtempSync(join(tmpdir(), 'keypool-config-'));
  dirs.push(dir);
  const file = join(dir, name);
  writeFileSync(file, yaml);
  return file;
}

function load(yaml: string, env: NodeJS.ProcessEnv = {}): GatewayConfig {
  return loadGatewayConfig({ file: write(yaml), env });
}

/** The ConfigError thrown by loadGatewayConfig (fails the test if none is thrown). */
function errorOf(opts: { file?: string; env?: NodeJS.ProcessEnv }): ConfigError {
  try {
    loadGatewayConfig({ env: {}, ...opts });
  } catch (e) {
    expect(isConfigError(e)).toBe(true);
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected loadGatewayConfig to throw');
}

/** Loads `yaml` from a temp file and returns the lines `path: message` of the error, and the file. */
function problems(yaml: string, env: NodeJS.ProcessEnv = {}): { lines: string[]; message: string; file: string } {
  const file = write(yaml);
  const err = errorOf({ file, env });
  return { lines: err.issues.map((i) => `${i.path || '(root)'}: ${i.message}`), message: err.message, file };
}

/** Asserts no 8-character window of `secret` (other than a common prefix) shows up in `text`. */
function expectNoSecret(text: string, secret: string) {
  expect(text).not.toContain(secret);
  for (let i = 0; i + 8 <= secret.length; i++) {
    const f = secret.slice(i, i + 8);
    if (f !== 'sk-proj-') expect(text).not.toContain(f);
  }
}

const SERVER_DEFAULTS = {
  host: '127.0.0.1',
  port: 8080,
  bodyLimit: 4 * 1024 * 1024,
  deadlineMs: 60_000,
  attemptTimeoutMs: 60_000,
  maxAttempts: 4,
  backoff: { baseMs: 100, maxMs: 5000 },
  defaultMaxOutputTokens: 1024,
  drainMs: 30_000,
};

describe('no config file', () => {
  it('takes every default and has no keys', () => {
    const c = loadGatewayConfig({ env: {} });
    expect(c.redis).toEqual({});
    expect(c.server).toEqual(SERVER_DEFAULTS);
    expect(c.logLevel).toBe('info');
    expect(c.routes).toEqual({});
    expect(c.pool.pool).toBe('default');
    expect(c.pool.keys).toEqual([]);
  });

  it('reads every override from the environment', () => {
    const c = loadGatewayConfig({
      env: {
        REDIS_URL: 'redis://:pw@redis.internal:6380/2',
        KEYPOOL_HOST: '0.0.0.0',
        KEYPOOL_PORT: '9090',
        KEYPOOL_ADMIN_TOKEN: TOKEN,
        KEYPOOL_POOL: 'prod',
        KEYPOOL_LOG_LEVEL: 'debug',
      },
    });
    expect(c.redis).toEqual({ url: 'redis://:pw@redis.internal:6380/2' });
    expect(c.server).toEqual({ ...SERVER_DEFAULTS, host: '0.0.0.0', port: 9090, adminToken: TOKEN });
    expect(c.logLevel).toBe('debug');
    expect(c.pool.pool).toBe('prod');
  });

  it('takes port 0 (any free port)', () => {
    expect(loadGatewayConfig({ env: { KEYPOOL_PORT: '0' } }).server.port).toBe(0);
  });

  it('treats an empty variable as unset', () => {
    const c = loadGatewayConfig({ env: { KEYPOOL_PORT: '', KEYPOOL_ADMIN_TOKEN: '', REDIS_URL: '', KEYPOOL_POOL: '' } });
    expect(c.server.port).toBe(8080);
    expect(c.server.adminToken).toBeUndefined();
    expect(c.redis.url).toBeUndefined();
    expect(c.pool.pool).toBe('default');
  });

  it('reports every invalid env value under its variable name, in one error', () => {
    const err = errorOf({
      env: {
        REDIS_URL: 'http://user:hunter2hunter2@redis.internal',
        KEYPOOL_PORT: '80a',
        KEYPOOL_ADMIN_TOKEN: 'too-short-token-1234',
        KEYPOOL_STATUS_TOKEN: 'short-status-token',
        KEYPOOL_POOL: 'my pool',
        KEYPOOL_LOG_LEVEL: 'verbose',
      },
    });
    expect(err.message).toBe(
      [
        'invalid config from the environment (6 problems):',
        '  - REDIS_URL: expected a redis:// or rediss:// URL',
        '  - KEYPOOL_PORT: expected an integer 0-65535',
        '  - KEYPOOL_ADMIN_TOKEN: must be at least 24 characters (generate one with: openssl rand -hex 24)',
        '  - KEYPOOL_STATUS_TOKEN: must be at least 24 characters (generate one with: openssl rand -hex 24)',
        '  - KEYPOOL_LOG_LEVEL: expected one of fatal, error, warn, info, debug, trace, silent',
        '  - KEYPOOL_POOL: use 1-64 letters, digits, "_", "." or "-"',
      ].join('\n'),
    );
    // a Redis URL may carry a password, a token is a secret: neither is echoed
    expect(err.message).not.toContain('hunter2');
    expect(err.message).not.toContain('too-short-token');
    expect(err.message).not.toContain('short-status-token');
  });

  it.each([['65536'], ['-1'], ['8080.5'], ['0x50'], [' ']])('rejects KEYPOOL_PORT=%j', (port) => {
    expect(errorOf({ env: { KEYPOOL_PORT: port } }).issues).toEqual([{ path: 'KEYPOOL_PORT', message: 'expected an integer 0-65535' }]);
  });
});

describe('env overrides a file', () => {
  const yaml = `
pool: from-file
redis: { url: "redis://file-redis:6379" }
server: { host: 10.0.0.1, port: 7000, adminToken: "${TOKEN}-file" }
logLevel: warn
`;

  it('uses the file when the env is silent', () => {
    const c = load(yaml);
    expect(c.redis.url).toBe('redis://file-redis:6379');
    expect(c.server).toMatchObject({ host: '10.0.0.1', port: 7000, adminToken: `${TOKEN}-file` });
    expect(c.logLevel).toBe('warn');
    expect(c.pool.pool).toBe('from-file');
  });

  it('lets each env variable win over its field', () => {
    const c = load(yaml, {
      REDIS_URL: 'rediss://env-redis:6380',
      KEYPOOL_HOST: '0.0.0.0',
      KEYPOOL_PORT: '9000',
      KEYPOOL_ADMIN_TOKEN: TOKEN,
      KEYPOOL_POOL: 'from-env',
      KEYPOOL_LOG_LEVEL: 'error',
    });
    expect(c.redis.url).toBe('rediss://env-redis:6380');
    expect(c.server).toMatchObject({ host: '0.0.0.0', port: 9000, adminToken: TOKEN });
    expect(c.logLevel).toBe('error');
    expect(c.pool.pool).toBe('from-env');
  });

  it('a valid env value replaces an invalid file value; an invalid env value is reported and the file value checked', () => {
    expect(load('server: { port: 99999 }', { KEYPOOL_PORT: '8081' }).server.port).toBe(8081);
    const { lines } = problems('server: { port: 99999 }', { KEYPOOL_PORT: 'x' });
    expect(lines).toEqual(['KEYPOOL_PORT: expected an integer 0-65535', 'server.port: expected an integer 0-65535']);
  });
});

describe('interpolation', () => {
  it('replaces ${VAR} and ${VAR:-default} in every string value', () => {
    const c = load(
      `
pool: \${POOL}
server:
  host: \${HOST:-0.0.0.0}
  adminToken: "\${TOKEN_PREFIX}-\${TOKEN_REST:-5f2c9e1b7a3d4c6e8f0a}"
keys:
  - secret: \${SECRET}
    name: "key of \${TEAM:-nobody}"
    models: ["\${MODEL:-gpt-4o-mini}"]
`,
      { POOL: 'team-a', TOKEN_PREFIX: 'adm', SECRET: S1, TEAM: 'search' },
    );
    expect(c.pool.pool).toBe('team-a');
    expect(c.server.host).toBe('0.0.0.0');
    expect(c.server.adminToken).toBe('adm-5f2c9e1b7a3d4c6e8f0a');
    expect(c.pool.keys[0]).toMatchObject({ secret: S1, name: 'key of search', models: ['gpt-4o-mini'] });
  });

  it('uses the default when the variable is empty, and the empty value for ${VAR}', () => {
    const c = load('server: { host: "${HOST:-0.0.0.0}" }\nkeys: []\nprices: { m: { input: 1, output: 2 } }\npool: "p${EMPTY}"', { HOST: '', EMPTY: '' });
    expect(c.server.host).toBe('0.0.0.0');
    expect(c.pool.pool).toBe('p');
  });

  it('writes $${ as a literal ${', () => {
    expect(load('keys: [{ secret: "sk-$${notavar}-12345", models: [m] }]').pool.keys[0]!.secret).toBe('sk-${notavar}-12345');
  });

  it('turns an interpolated number into a number where the schema wants one, and nowhere else', () => {
    const c = load('pool: ${POOL}\nserver:\n  port: ${PORT:-8080}\n  maxAttempts: "${ATTEMPTS}"\nbreaker: { failures: "${FAILURES}" }', {
      POOL: '123',
      ATTEMPTS: '2',
      FAILURES: '7',
    });
    expect(c.server.port).toBe(8080);
    expect(c.server.maxAttempts).toBe(2);
    expect(c.pool.breaker.failures).toBe(7);
    expect(c.pool.pool).toBe('123'); // a string field keeps the string
  });

  it('reports an unset variable at its path, once (not again as a bad value)', () => {
    const { message, file } = problems('server:\n  host: ${HOST}\nkeys:\n  - secret: ${OPENAI_KEY}\n    models: [gpt-4o]\n');
    expect(message).toBe(
      [
        `invalid config file ${file} (2 problems):`,
        '  - server.host: environment variable HOST is not set',
        '  - keys[0].secret: environment variable OPENAI_KEY is not set',
      ].join('\n'),
    );
  });

  it('reports a malformed reference', () => {
    expect(problems('server: { host: "${1HOST}" }').lines).toEqual([
      'server.host: malformed ${...} reference: write ${VAR} or ${VAR:-default} ($${ for a literal ${)',
    ]);
  });
});

describe('keys[i].secretEnv', () => {
  const key = (extra: string) => `keys:\n  - name: openai-1\n    models: [gpt-4o]\n${extra}`;

  it('reads the secret from the named variable', () => {
    const c = load(key('    secretEnv: OPENAI_KEY_1\n'), { OPENAI_KEY_1: S1 });
    expect(c.pool.keys[0]).toMatchObject({ name: 'openai-1', secret: S1, models: ['gpt-4o'] });
    expect(c.pool.keys[0]).not.toHaveProperty('secretEnv');
  });

  it('reports a variable that is not set, or empty', () => {
    expect(problems(key('    secretEnv: OPENAI_KEY_1\n')).lines).toEqual(['keys[0].secretEnv: environment variable OPENAI_KEY_1 is not set']);
    expect(problems(key('    secretEnv: OPENAI_KEY_1\n'), { OPENAI_KEY_1: '' }).lines).toEqual([
      'keys[0].secretEnv: environment variable OPENAI_KEY_1 is empty',
    ]);
  });

  it('wants exactly one of secret and secretEnv', () => {
    expect(problems(key(`    secretEnv: OPENAI_KEY_1\n    secret: ${S1}\n`), { OPENAI_KEY_1: S2 }).lines).toEqual([
      'keys[0]: set either secret or secretEnv, not both',
    ]);
    expect(problems(key('')).lines).toEqual([
      'keys[0].secret: missing: set secret (the API key) or secretEnv (the name of an environment variable holding it)',
    ]);
  });

  it('wants a variable name', () => {
    expect(problems(key('    secretEnv: "sk-not-a-name"\n')).lines).toEqual([
      'keys[0].secretEnv: must be the name of an environment variable (letters, digits and _)',
    ]);
  });

  it('reports a bad secret under secretEnv, naming the variable and never the value', () => {
    const short = 'sk-abc1';
    const { lines, message } = problems(
      `keys:\n  - { secretEnv: SHORT, models: [m] }\n  - { secretEnv: A, models: [m] }\n`,
      { SHORT: short, A: S1 },
    );
    expect(lines).toEqual([
      'keys[0].secretEnv: the value of SHORT: must be the provider API key (8 characters or more)',
    ]);
    expect(message).not.toContain(short);
    const dup = problems(`keys:\n  - { secretEnv: A, models: [m] }\n  - { secretEnv: B, models: [m] }\n`, { A: S1, B: S1 });
    expect(dup.lines).toEqual(['keys[1].secretEnv: the value of B: same secret and baseURL as keys[0]; list each key once']);
    expectNoSecret(dup.message, S1);
  });
});

describe('routes', () => {
  const keys = `keys:\n  - { secret: ${S1}, models: [gpt-4o, gpt-4o-mini] }\n  - { secret: ${S2}, models: [llama-3] }\n`;

  it('accepts routes whose models are served', () => {
    const c = load(`${keys}routes:\n  smart: { models: [gpt-4o, gpt-4o-mini] }\n  cheap: { models: [llama-3] }\n`);
    expect(c.routes).toEqual({ smart: { models: ['gpt-4o', 'gpt-4o-mini'] }, cheap: { models: ['llama-3'] } });
  });

  it('wants at least one model per route', () => {
    expect(problems(`${keys}routes:\n  smart: { models: [] }\n`).lines).toEqual(['routes.smart.models: list at least one model']);
  });

  it('rejects a route named like a served model', () => {
    expect(problems(`${keys}routes:\n  llama-3: { models: [gpt-4o] }\n`).lines).toEqual([
      "routes.llama-3: 'llama-3' is also a model served by keys[1]: a request for it would be ambiguous; rename the route",
    ]);
  });

  it('rejects a model no key serves, and still checks the other routes when one is malformed', () => {
    expect(problems(`${keys}routes:\n  smart: { models: [gpt-4o, gpt-5] }\n  bad: { models: [] }\n  odd: { models: [o1] }\n`).lines).toEqual([
      'routes.bad.models: list at least one model',
      "routes.smart.models[1]: no key in this file serves model 'gpt-5'",
      "routes.odd.models[0]: no key in this file serves model 'o1'",
    ]);
  });

  it('does not check models when the file has no keys (they come later)', () => {
    expect(load('routes:\n  smart: { models: [gpt-5] }\n').routes).toEqual({ smart: { models: ['gpt-5'] } });
  });

  it('rejects an unknown field of a route', () => {
    expect(problems('routes:\n  smart: { model: [gpt-4o] }\n').lines).toEqual([
      'routes.smart.models: Invalid input: expected array, received undefined',
      "routes.smart: unknown field 'model' (did you mean 'models'?)",
    ]);
  });
});

describe('unknown fields', () => {
  it('names a top-level typo and suggests the field', () => {
    const { message, file } = problems('serverr:\n  port: 8080\n');
    expect(message).toBe(`invalid config file ${file} (1 problem):\n  - (root): unknown field 'serverr' (did you mean 'server'?)`);
  });

  it('suggests nothing when no field is close', () => {
    expect(problems('frobnicate: true\n').lines).toEqual(["(root): unknown field 'frobnicate'"]);
  });

  it('reports a __proto__ field instead of letting it change anything', () => {
    expect(problems('__proto__: { pool: x }\nserver:\n  __proto__: { port: 1 }\n').lines).toEqual([
      "server: unknown field '__proto__'",
      "(root): unknown field '__proto__'",
    ]);
  });

  it('finds them in every section', () => {
    expect(
      problems(
        `redis: { uri: "redis://x" }\nserver: { prot: 1, backoff: { base: 1 } }\nbreaker: { failure: 3 }\nkeys:\n  - { secret: ${S1}, models: [m], secret_env: X, rpn: 5 }\n`,
      ).lines,
    ).toEqual([
      "redis: unknown field 'uri' (did you mean 'url'?)",
      "server.backoff: unknown field 'base' (did you mean 'baseMs'?)",
      "server: unknown field 'prot' (did you mean 'port'?)",
      "keys[0]: unknown field 'secret_env' (did you mean 'secretEnv'?)",
      "keys[0]: unknown field 'rpn' (did you mean 'rpm'?)",
      "breaker: unknown field 'failure' (did you mean 'failures'?)",
    ]);
  });
});

describe('gateway sections', () => {
  it('reports each invalid server field with the message the operator reads', () => {
    const { message, file } = problems(`
server:
  host: ""
  port: 70000
  adminToken: short-token
  statusToken: short-status
  bodyLimit: 4 megs
  deadlineMs: 10
  attemptTimeoutMs: 1.5
  maxAttempts: 0
  backoff: { baseMs: 500, maxMs: 100 }
  defaultMaxOutputTokens: 0
  drainMs: -1
logLevel: verbose
redis:
  url: http://user:hunter2hunter2@redis
  embeddedDir: ""
`);
    expect(message).toBe(
      [
        `invalid config file ${file} (14 problems):`,
        '  - redis.url: expected a redis:// or rediss:// URL',
        '  - redis.embeddedDir: Too small: expected string to have >=1 characters',
        '  - server.host: Too small: expected string to have >=1 characters',
        '  - server.port: expected an integer 0-65535',
        '  - server.adminToken: must be at least 24 characters (generate one with: openssl rand -hex 24)',
        '  - server.statusToken: must be at least 24 characters (generate one with: openssl rand -hex 24)',
        '  - server.bodyLimit: expected a size such as 512kb or 4mb, or a number of bytes',
        '  - server.deadlineMs: Too small: expected number to be >=100',
        '  - server.attemptTimeoutMs: Invalid input: expected int, received number',
        '  - server.maxAttempts: Too small: expected number to be >=1',
        '  - server.backoff.maxMs: must be at least backoff.baseMs',
        '  - server.defaultMaxOutputTokens: Too small: expected number to be >0',
        '  - server.drainMs: Too small: expected number to be >=0',
        '  - logLevel: expected one of fatal, error, warn, info, debug, trace, silent',
      ].join('\n'),
    );
    expect(message).not.toContain('hunter2');
    expect(message).not.toContain('short-token');
    expect(message).not.toContain('short-status');
  });

  it('reads bodyLimit with or without a unit', () => {
    expect(load('server: { bodyLimit: 512kb }').server.bodyLimit).toBe(512 * 1024);
    expect(load('server: { bodyLimit: 1MB }').server.bodyLimit).toBe(1024 * 1024);
    expect(load('server: { bodyLimit: 1000 }').server.bodyLimit).toBe(1000);
    expect(parseByteSize('1.5kb')).toBe(1536);
    expect(parseByteSize('0')).toBeUndefined();
    expect(parseByteSize('4 TB')).toBeUndefined();
  });

  it('treats an empty adminToken as no admin API', () => {
    expect(load('server: { adminToken: "${KEYPOOL_ADMIN_TOKEN:-}" }').server.adminToken).toBeUndefined();
  });

  it('treats a section whose fields are all commented out as absent', () => {
    const c = load('redis:\n  # url: redis://x\nserver:\nroutes:\nkeys:\n');
    expect(c.redis).toEqual({});
    expect(c.server).toEqual(SERVER_DEFAULTS);
    expect(c.routes).toEqual({});
    expect(c.pool.keys).toEqual([]);
  });

  it('resolves embeddedDir against the directory of the file', () => {
    const file = write('redis: { embeddedDir: ./.keypool/redis }');
    expect(loadGatewayConfig({ file, env: {} }).redis.embeddedDir).toBe(join(file, '..', '.keypool', 'redis'));
    expect(load('redis: { embeddedDir: /var/lib/keypool }').redis.embeddedDir).toBe('/var/lib/keypool');
  });
});

describe('the pool part goes through core validation', () => {
  it('passes keys and pool settings to PoolConfig with their defaults', () => {
    const c = load(`pool: prod\nkeys:\n  - { secret: ${S1}, models: [gpt-4o], rpm: 500 }\nbreaker: { failures: 3 }\nprices: { gpt-4o: { input: 2.5, output: 10 } }\n`);
    // exactly what core makes of the same key (core's own test pins every default)
    expect(c.pool.keys[0]).toEqual(parsePoolConfig({ keys: [{ secret: S1, models: ['gpt-4o'], rpm: 500 }] }).keys[0]);
    expect(c.pool.keys[0]).toMatchObject({ rpm: 500, baseURL: 'https://api.openai.com/v1' });
    expect(c.pool.breaker.failures).toBe(3);
    expect(c.pool.prices).toEqual({ 'gpt-4o': { input: 2.5, output: 10 } });
  });

  it('collects problems of the YAML sections, the pool and the environment in one error', () => {
    const { message, file } = problems(
      `
serverr: {}
pool: "bad name"
server: { port: -5 }
routes:
  smart: { models: [gpt-5] }
keys:
  - { secret: short, models: [gpt-4o] }
  - { secret: ${S1}, models: [], tpmBurst: 10 }
breaker: { errorRate: 2 }
health: { windowsMs: 1000 }
`,
      { KEYPOOL_LOG_LEVEL: 'loud' },
    );
    expect(message).toBe(
      [
        `invalid config file ${file} (10 problems):`,
        '  - KEYPOOL_LOG_LEVEL: expected one of fatal, error, warn, info, debug, trace, silent',
        '  - server.port: expected an integer 0-65535',
        '  - pool: use 1-64 letters, digits, "_", "." or "-"',
        '  - keys[0].secret: must be the provider API key (8 characters or more)',
        '  - keys[1].models: list at least one model this key may serve',
        '  - breaker.errorRate: Too big: expected number to be <=1',
        "  - (root): unknown field 'serverr' (did you mean 'server'?)",
        '  - keys[1].tpmBurst: tpmBurst needs tpm',
        "  - health: unknown field 'windowsMs' (did you mean 'windowMs'?)",
        "  - routes.smart.models[0]: no key in this file serves model 'gpt-5'",
      ].join('\n'),
    );
    expect(message).not.toContain('short,');
    expectNoSecret(message, S1);
  });
});

describe('the file itself', () => {
  it('names a missing file', () => {
    const file = join(tmpdir(), 'keypool-no-such-dir', 'keypool.yaml');
    expect(errorOf({ file }).message).toBe(
      `invalid config file ${file} (1 problem):\n  - ${file}: cannot read the config file: no such file`,
    );
  });

  it('names a directory given as the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'keypool-config-'));
    dirs.push(dir);
    expect(errorOf({ file: dir }).issues).toEqual([{ path: dir, message: 'cannot read the config file: it is a directory' }]);
  });

  it('reports a YAML syntax error with line:column', () => {
    const { lines, file } = problems('server:\n  port: 8080\n   host: x\n');
    expect(lines).toEqual([`${file}:2:9: Nested mappings are not allowed in compact mappings`, `${file}:2:9: Implicit keys need to be on a single line`]);
  });

  it('hints at quoting a ${VAR} inside [ ] or { }', () => {
    const { lines, file } = problems('keys:\n  - { secret: "x", models: [${MODEL}] }\n');
    expect(lines).toEqual([`${file}:2:30: Missing , or : between flow sequence items (inside [ ] or { }, quote a reference: "\${VAR}")`]);
  });

  it('gives no quoting hint for a reference outside [ ] and { }', () => {
    const { lines, file } = problems('server:\n  host: ${HOST}\n   port: 1\n');
    expect(lines.every((l) => !l.includes('quote a reference'))).toBe(true);
    expect(lines[0]).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: `));
  });

  it('reports a duplicate field', () => {
    const { lines, file } = problems('server:\n  port: 1\n  port: 2\n');
    expect(lines).toEqual([`${file}:3:3: Map keys must be unique`]);
  });

  it('never quotes the line of a syntax error (it may hold a secret)', () => {
    const { message } = problems(`keys:\n  - secret: ${S1}\n    models: [gpt-4o\n  - secret: ${S2} "x"\n`);
    expectNoSecret(message, S1);
    expectNoSecret(message, S2);
  });

  it('wants a mapping at the top level', () => {
    const { lines, file } = problems('- pool: a\n');
    expect(lines).toEqual([`${file}: expected a mapping of sections at the top level (pool, keys, redis, server, routes...)`]);
  });

  it('takes an empty file as all defaults', () => {
    expect(load('# nothing yet\n').server).toEqual(SERVER_DEFAULTS);
  });
});

describe('secrets never appear in errors', () => {
  const bad: [string, string][] = [
    ['too short', 'keys:\n  - { secret: sk-9x7, models: [m] }\n'],
    ['duplicate', `keys:\n  - { secret: ${S1}, models: [m] }\n  - { secret: ${S1}, models: [m] }\n`],
    ['bad key fields', `keys:\n  - { secret: ${S1}, models: [], rpm: -1, provider: "" }\n`],
    ['wrong type', `keys:\n  - { secret: [${S1}], models: [m] }\n`],
    ['secret as a key item', `keys:\n  - ${S1}\n`],
  ];
  it.each(bad)('%s', (_, yaml) => {
    const { message } = problems(yaml);
    expectNoSecret(message, S1);
    expect(message).not.toContain('sk-9x7');
  });
});

describe('keypool.example.yaml', () => {
  const example = fileURLToPath(new URL('../../server/keypool.example.yaml', import.meta.url));
  const env = { KEYPOOL_ADMIN_TOKEN: TOKEN, OPENAI_KEY_1: S1, OPENAI_KEY_2: S2, GROQ_KEY_1: 'gsk_7Hq2Lm9Xp4Rt8Wz1Ab3Cd5Ef' };

  it('loads with the env it names', () => {
    const c = loadGatewayConfig({ file: example, env });
    expect(c.redis.url).toBeUndefined();
    expect(c.redis.embeddedDir).toBe(join(example, '..', '.keypool', 'redis'));
    expect(c.server).toEqual({ ...SERVER_DEFAULTS, adminToken: TOKEN });
    expect(c.logLevel).toBe('info');
    expect(Object.keys(c.routes)).toEqual(['smart', 'fast']);
    expect(c.pool.keys.map((k) => k.secret)).toEqual([S1, S2, env.GROQ_KEY_1]);
    expect(c.pool.keys[0]!.budget).toEqual({ usd: 200, period: 'month' });
  });

  it('lists what is missing without that env', () => {
    expect(errorOf({ file: example, env: {} }).issues).toEqual([
      { path: 'server.adminToken', message: 'environment variable KEYPOOL_ADMIN_TOKEN is not set' },
      { path: 'keys[0].secretEnv', message: 'environment variable OPENAI_KEY_1 is not set' },
      { path: 'keys[1].secretEnv', message: 'environment variable OPENAI_KEY_2 is not set' },
      { path: 'keys[2].secretEnv', message: 'environment variable GROQ_KEY_1 is not set' },
    ]);
  });

  it('shows every field of the file, and every gateway field has a description', () => {
    type Node = { description?: string; properties?: Record<string, Node>; items?: Node };
    const schema = z.toJSONSchema(GatewayFileSchema, { io: 'input' }) as Node;
    const text = readFileSync(example, 'utf8');
    const fields = (node: Node, prefix: string): string[] =>
      Object.entries(node.properties ?? {}).flatMap(([name, p]) => [
        `${prefix}${name}`,
        ...fields(p, `${prefix}${name}.`),
        ...(p.items ? fields(p.items, `${prefix}${name}[].`) : []),
      ]);
    const all = fields(schema, '');
    expect(all).toContain('server.backoff.maxMs');
    expect(all).toContain('keys[].secretEnv');
    for (const path of all) {
      const name = path.split('.').pop()!.replace('[]', '');
      expect(new RegExp(`\\b${name}:`).test(text), `${path} in keypool.example.yaml`).toBe(true);
    }
    for (const section of ['redis', 'server'] as const) {
      for (const [name, p] of Object.entries(schema.properties![section]!.properties!)) expect(p.description, `${section}.${name}`).toBeTruthy();
    }
    for (const name of ['logLevel', 'routes', 'keys']) expect(schema.properties![name]!.description, name).toBeTruthy();
  });
});

describe('secrets and scheduler sections', () => {
  it('loads secret sources with their defaults, and the scheduler with its defaults', () => {
    const cfg = load(
      [
        'secrets:',
        '  sources:',
        '    - type: env',
        '      prefix: KEYPOOL_OPENAI_KEY',
        '      defaults: { models: [gpt-4o-mini], rpm: 500 }',
        '    - type: vault',
        '      endpoint: http://vault:8200',
        '      path: keypool/openai',
        '      auth: { method: approle, roleId: "${ROLE}", secretId: "${SECRET_ID}" }',
        'scheduler: { probeMs: 6000 }',
        'routes: { smart: { models: [gpt-4o] } }',
      ].join('\n'),
      { ROLE: 'r-1', SECRET_ID: 's-1' },
    );
    expect(cfg.secrets!.sources.map((s) => s.type)).toEqual(['env', 'vault']);
    expect(cfg.secrets!.timeoutMs).toBe(5000);
    expect(cfg.secrets!.heartbeatMs).toBe(5000);
    expect(cfg.scheduler).toMatchObject({ probeMs: 6000, secretRefreshMs: 60_000, budgetPattern: '0 0 * * *', rotationGraceMs: 30_000 });
    // with secret sources the routes cannot be checked against keys: they come later
    expect(cfg.routes.smart!.models).toEqual(['gpt-4o']);
  });

  it('without a secrets section the scheduler still has its defaults', () => {
    expect(load('logLevel: warn').scheduler.housekeepingMs).toBe(60_000);
    expect(load('logLevel: warn').secrets).toBeUndefined();
  });

  it('reports each bad source and scheduler field with its path', () => {
    const { lines } = problems(
      [
        'secrets:',
        '  sources:',
        '    - type: consul',
        '    - type: file',
        '  timeoutMs: 5',
        'scheduler: { probeMs: 10, lockMs: fast, cron: x }',
      ].join('\n'),
    );
    expect(lines).toEqual([
      "secrets.sources[0].type: Invalid discriminator value. Expected 'env' | 'file' | 'aws' | 'vault'",
      'secrets.sources[1].path: Invalid input: expected string, received undefined',
      'secrets.timeoutMs: Too small: expected number to be >=100',
      'scheduler.probeMs: Too small: expected number to be >=500',
      'scheduler.lockMs: Invalid input: expected number, received string',
      "scheduler: unknown field 'cron'",
    ]);
  });

  it('a run may not outlast its interval', () => {
    expect(problems('scheduler: { secretRefreshMs: 10000, rotationGraceMs: 10000, probeMs: 1000, probeTimeoutMs: 5000 }').lines).toEqual([
      'scheduler.rotationGraceMs: must be shorter than secretRefreshMs (10000)',
      'scheduler.probeTimeoutMs: must be shorter than probeMs (1000)',
    ]);
  });

  it('an empty source list says what to write', () => {
    expect(problems('secrets: { sources: [] }').lines).toEqual(['secrets.sources: list at least one source (type: env, file, aws or vault)']);
  });
});

describe('declared gateway tokens (tokens:)', () => {
  const SHA = 'a'.repeat(64);

  it('takes tokens by their sha256 with the settings the admin API takes', () => {
    const c = load(`tokens:\n  - sha256: ${SHA}\n    name: billing\n    rpm: 600\n    budget: { usd: 50, period: day }\n    models: [gpt-4o-mini]\n`);
    expect(c.pool.tokens).toEqual([{ sha256: SHA, name: 'billing', rpm: 600, budget: { usd: 50, period: 'day' }, models: ['gpt-4o-mini'], weight: 1, allowCritical: false }]);
  });

  it('refuses a token itself in place of its hash, and unknown fields, saying where', () => {
    const token = `kpt_${'x'.repeat(43)}`;
    const err = errorOf({ file: write(`tokens:\n  - sha256: ${token}\n    name: leaked\n    rpn: 5\n`) });
    expect(err.message).toMatch(/tokens\[0\]\.sha256: expected the 64 hex characters of the token's sha256 \(keypool tokens hash\), never the token itself/);
    expect(err.message).toMatch(/tokens\[0\].*rpn/);
    expect(err.message).not.toContain(token);
  });
});

describe('log redaction', () => {
  it('REDACT hides a secret, an API key and a token at the top level and one level down (a key, a lease, a spec)', () => {
    const sink = new LogSink(REDACT);
    sink.logger.info({ secret: S1, key: { id: 'k1', secret: S2 }, lease: { secret: S1 }, client: { apiKey: S2 }, gateway: { token: TOKEN }, server: { adminToken: TOKEN, statusToken: TOKEN } }, 'x');
    sink.logger.info({ keys: [{ secret: S1 }], headers: { authorization: `Bearer ${TOKEN}` } }, 'y');
    for (const s of [S1, S2, TOKEN]) expect(sink.text).not.toContain(s);
    // what is not secret stays readable
    expect(sink.text).toContain('"id":"k1"');
  });
});
