/**
 * The `keypool` binary without Redis: help, usage errors and their exit codes, an unreachable
 * gateway, and `serve` failing before it needs Redis (invalid config, no Redis at all).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { BIN, REPO, childEnv, keypool } from './run.js';

/** A port nothing listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

const COMMANDS = [
  [],
  ['serve'],
  ['status'],
  ['keys'],
  ['keys', 'list'],
  ...['disable', 'enable', 'drain', 'retire', 'reset', 'reset-budget', 'remove', 'set'].map((a) => ['keys', a]),
  ['tokens'],
  ['tokens', 'create'],
  ['tokens', 'list'],
  ['tokens', 'revoke'],
  ['worker'],
  ['secrets'],
  ...['init', 'add', 'remove', 'list', 'rotate'].map((a) => ['secrets', a]),
  ['queue'],
  ...['add', 'add-batch', 'get', 'wait', 'failed', 'retry', 'counts'].map((a) => ['queue', a]),
];

describe('help', () => {
  it('every command has --help: exit 0, usage and examples on stdout', { timeout: 240_000 }, async () => {
    // four at a time: 35 processes at once on a busy 2-core machine outlived the kill timer
    const runs: Awaited<ReturnType<typeof keypool>>[] = [];
    for (let i = 0; i < COMMANDS.length; i += 4) {
      runs.push(...(await Promise.all(COMMANDS.slice(i, i + 4).map((c) => keypool([...c, '--help'], { timeoutMs: 60_000 })))));
    }
    runs.forEach((r, i) => {
      const name = ['keypool', ...COMMANDS[i]!].join(' ');
      expect(r.code, name).toBe(0);
      expect(r.stderr, name).toBe('');
      expect(r.stdout, name).toContain(`Usage: ${name}`);
      if (COMMANDS[i]!.length > 0) expect(r.stdout, name).toMatch(/\nExamples:\n {2}\$ \S/);
    });
    // help texts fit a terminal, the example lines aside
    for (const r of runs) for (const l of r.stdout.split('\n')) if (!l.startsWith('  $ ')) expect(l.length, l).toBeLessThanOrEqual(80);
  });

  it('help <command> and --version', async () => {
    const help = await keypool(['tokens', 'help', 'create']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: keypool tokens create');
    const v = await keypool(['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
  });
});

describe('usage errors exit 2 with commander\'s message', () => {
  const cases: [string[], RegExp][] = [
    [['bogus'], /^error: unknown command 'bogus'/],
    [['keys', 'frobnicate'], /^error: unknown command 'frobnicate'/],
    [['status', '--bogus'], /^error: unknown option '--bogus'/],
    [['keys', 'disable'], /^error: missing required argument 'key'/],
    [['keys', 'set', 'alpha', '--rpm', 'abc'], /^error: option '--rpm <n>' argument 'abc' is invalid\. expected a whole number >= 0/],
    [['keys', 'set', 'alpha', '--rpm', '-5'], /^error: option '--rpm <n>' argument '-5' is invalid\. expected a whole number >= 0/],
    [['keys', 'set', 'alpha', '--weight', '0'], /^error: option '--weight <x>' argument '0' is invalid\. expected a number > 0/],
    [['keys', 'set', 'alpha', '--budget-period', 'week'], /^error: option '--budget-period <period>' argument 'week' is invalid\. Allowed choices are day, month, total\./],
    [['keys', 'set', 'alpha'], /^error: nothing to change: give at least one of --rpm/],
    [['tokens', 'create'], /^error: required option '--name <name>' not specified/],
    [['tokens', 'create', '--name', 'x', '--rpm-burst', '5'], /^error: --rpm-burst needs --rpm/],
    [['tokens', 'create', '--name', 'x', '--budget-period', 'day'], /^error: --budget-period needs --budget-usd/],
    [['tokens', 'create', '--name', 'x', '--models', ','], /^error: option '--models <list>' argument ',' is invalid\./],
    [['status', '--url', 'ftp://example.com'], /^error: option '--url <url>' argument 'ftp:\/\/example\.com' is invalid\. expected an http:\/\/ or https:\/\/ URL/],
    [['keys'], /^Usage: keypool keys/],
  ];
  it.each(cases)('keypool %j', async (args, message) => {
    // an admin token, so that the checks under test come before the one for the token
    const r = await keypool(args, { env: { KEYPOOL_ADMIN_TOKEN: 'admin-token-for-cli-tests-0123456789abcdef', KEYPOOL_URL: `http://127.0.0.1:${await closedPort()}` } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });
});

describe('an unreachable gateway', () => {
  it('every command that talks to the gateway: exit 1 and what to check', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const env = { KEYPOOL_ADMIN_TOKEN: 'admin-token-for-cli-tests-0123456789abcdef' };
    const runs = await Promise.all(
      [['status'], ['keys', 'list'], ['keys', 'disable', 'a'], ['tokens', 'list'], ['tokens', 'create', '--name', 'n']].map((a) => keypool([...a, '--url', url], { env })),
    );
    for (const r of runs) {
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`error: cannot reach the gateway at ${url}: is \`keypool serve\` running? (set --url or KEYPOOL_URL)\n`);
      expect(r.stdout).toBe('');
    }
    // KEYPOOL_URL is read too; the default is http://127.0.0.1:8080
    const fromEnv = await keypool(['status'], { env: { KEYPOOL_URL: url } });
    expect(fromEnv.stderr).toContain(`cannot reach the gateway at ${url}:`);
  });

  it('a server that is no gateway', async () => {
    const { createServer: http } = await import('node:http');
    const s = http((_req, res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>nope</h1>'));
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(s.address() as { port: number }).port}`;
      const r = await keypool(['status', '--url', url]);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`error: the server at ${url} answered 404 Not Found: is it a keypool gateway?\n`);
    } finally {
      s.close();
    }
  });
});

describe('keypool serve, failing before it needs Redis', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keypool-cli-'));

  it('an invalid config file: exit 2, every problem listed with its path, no secret', async () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(
      file,
      [
        'server:',
        '  port: 99999',
        '  adminToken: short',
        'logLevel: loud',
        'keys:',
        '  - name: one',
        '    secret: sk-test-secret-that-must-not-show-0001',
        '    models: [gpt-4o-mini]',
        '    rpm: lots',
        '  - name: two',
        '    secretEnv: NOT_SET_ANYWHERE_KP',
        '    models: [gpt-4o-mini]',
        'cooling:',
        '  defaltMs: 5',
        '',
      ].join('\n'),
    );
    const r = await keypool(['serve', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^error: invalid config file ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(6 problems\\):\n`));
    for (const path of ['server.port', 'server.adminToken', 'logLevel', 'keys[0].rpm', 'keys[1].secretEnv', 'cooling']) expect(r.stderr).toContain(`  - ${path}: `);
    expect(r.stderr).toContain("unknown field 'defaltMs' (did you mean 'defaultMs'?)");
    expect(r.stderr).toContain('environment variable NOT_SET_ANYWHERE_KP is not set');
    expect(r.stderr).not.toContain('sk-test-secret-that-must-not-show-0001');
  });

  it('KEYPOOL_CONFIG names the file too; a missing file is a config error', async () => {
    const r = await keypool(['serve'], { env: { KEYPOOL_CONFIG: join(dir, 'missing.yaml') } });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`error: invalid config file ${join(dir, 'missing.yaml')} (1 problem):\n  - ${join(dir, 'missing.yaml')}: cannot read the config file: no such file\n`);
  });

  it('no Redis configured and no redis-server on the PATH: exit 1 with one line saying what to do', async () => {
    const file = join(dir, 'ok.yaml');
    writeFileSync(file, 'server:\n  port: 0\nkeys:\n  - secret: sk-test-aaaaaaaaaaaaaaaaaaaaaaaa1111\n    models: [gpt-4o-mini]\n');
    const r = await keypool(['serve', '--config', file], { env: { PATH: join(dir, 'no-such-dir') } });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'error: cannot start the gateway: no Redis configured and redis-server is not on the PATH: set REDIS_URL (or redis.url in the config file), ' +
        'install redis-server (Debian: apt-get install redis-server), or start one with Docker: docker run -p 6379:6379 redis:7\n',
    );
  });

  it('a Redis that does not answer: exit 1 with one line naming it (without its password)', async () => {
    const file = join(dir, 'ok.yaml');
    const port = await closedPort();
    const r = await keypool(['serve', '--config', file], { env: { REDIS_URL: `redis://:hunter2-password@127.0.0.1:${port}` } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error: cannot start the gateway: cannot reach Redis at redis://[^ ]*127\\.0\\.0\\.1:${port}.*\n$`));
    expect(r.stderr).not.toContain('hunter2');
    expect(r.stdout).not.toContain('hunter2');
  });
});

describe('keypool tokens hash', () => {
  const hash = (stdin: string) => spawnSync(process.execPath, [BIN, 'tokens', 'hash'], { cwd: REPO, env: childEnv(), input: stdin, encoding: 'utf8' });

  it("prints the sha256 of the token on stdin (what the config's tokens: section declares), and nothing else", () => {
    const token = `kpt_${'A1b2_C3d-'.repeat(4)}abcdefg`;
    const r = hash(`${token}\n`);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${createHash('sha256').update(token).digest('hex')}\n`);
    expect(r.stderr).toBe('');
  });

  it('refuses what is not a gateway token, without echoing it (exit 2)', () => {
    const r = hash('sk-proj-not-a-gateway-token-12345\n');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/does not hold a gateway token \(kpt_ and 43 characters/);
    expect(r.stderr + r.stdout).not.toContain('sk-proj-not');
  });
});
