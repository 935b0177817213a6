/**
 * `keypool queue ...` run in-process (run() with the environment and stdin of the test, as the
 * binary would see them) against the test Redis, as a producer and an operator: without a worker
 * jobs wait; with an LlmWorker in the test process (a KeyPool whose key points at the fake
 * upstream) they run, fail, are retried. Usage errors exit 2, failures exit 1.
 *
 * The CLI takes a Redis URL (or a config file with one), not a cluster's nodes: the file runs in
 * the redis project and is skipped in the cluster one.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyPool, systemClock } from '@keypool/core';
import { connectionForChild, connectTo, startFakeOpenAI, testTarget, uniqueName, type FakeOpenAI } from '@keypool/testkit';
import { LogSink } from '@keypool/testkit/log-sink';
import { jobIdOf, LlmQueue, LlmWorker } from '@keypool/worker';
import { run } from '../src/program.js';

const SECRET = 'sk-cli-queue-aaaaaaaaaaaaaaaaaaaa1111';
const REDIS_PASSWORD = 'hunter2-redis-password-for-cli-test';
/** Every setting the CLI (or the config loader) reads from the environment: unset in each run unless given. */
const VARS = ['REDIS_URL', 'KEYPOOL_POOL', 'KEYPOOL_CONFIG', 'KEYPOOL_HOST', 'KEYPOOL_PORT', 'KEYPOOL_ADMIN_TOKEN', 'KEYPOOL_LOG_LEVEL', 'KP_QUEUE_TEST_KEY'];

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Every output, checked at the end for the key secret and the Redis password. */
const outputs: Ran[] = [];

/** `keypool <args>` in this process: exactly the variables of `env` set among VARS, `stdin` on stdin. */
async function kp(args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}): Promise<Ran> {
  const saved = Object.fromEntries(VARS.map((k) => [k, process.env[k]]));
  for (const k of VARS) delete process.env[k];
  Object.assign(process.env, opts.env ?? {});
  const real = Object.getOwnPropertyDescriptor(process, 'stdin')!;
  Object.defineProperty(process, 'stdin', { value: Readable.from(opts.stdin === undefined ? [] : [Buffer.from(opts.stdin)]), configurable: true });
  let stdout = '';
  let stderr = '';
  try {
    const code = await run(args, { out: (s) => void (stdout += s), err: (s) => void (stderr += s), color: false, clock: systemClock });
    const r = { code, stdout, stderr };
    outputs.push(r);
    return r;
  } finally {
    Object.defineProperty(process, 'stdin', real);
    for (const k of VARS) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

/** A port nothing listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe.skipIf(testTarget() === 'cluster')('keypool queue', () => {
  const pool = uniqueName('cli-queue');
  const dir = mkdtempSync(join(tmpdir(), 'keypool-cli-queue-'));
  let url: string;
  let fake: FakeOpenAI;
  /** The test's own view of the queue (to read what the CLI stored) and the worker's connection. */
  let connection: Redis | Cluster;
  let queue: LlmQueue;
  let keyPool: KeyPool | undefined;
  let worker: LlmWorker | undefined;

  /** `keypool queue <args> --redis <test Redis> --pool <pool>`. */
  const q = (args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}) => kp(['queue', ...args, '--redis', url, '--pool', pool], opts);
  const chatLine = (text: string, extra: Record<string, unknown> = {}) => JSON.stringify({ kind: 'chat', request: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: text }], max_tokens: 4 }, ...extra });
  const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
  const countsJson = async () => JSON.parse((await q(['counts', '--json'])).stdout) as Record<string, number>;

  beforeAll(async () => {
    url = connectionForChild().url!;
    fake = await startFakeOpenAI({ keys: [{ key: SECRET, name: 'a' }], latency: 2 });
    connection = connectTo(connectionForChild(), { maxRetriesPerRequest: null });
    queue = new LlmQueue({ connection, pool });
  });
  afterAll(async () => {
    await worker?.close();
    await queue?.close();
    await keyPool?.close();
    await connection?.quit();
    await fake?.stop();
    // no output held the provider key or a Redis password
    expect(outputs.length).toBeGreaterThan(20);
    for (const o of outputs) for (const s of [SECRET, REDIS_PASSWORD]) expect(o.stdout + o.stderr).not.toContain(s);
  });

  it('every queue command has --help with examples, lines of 80 columns at most', async () => {
    for (const c of [[], ['add'], ['add-batch'], ['get'], ['wait'], ['failed'], ['retry'], ['counts']]) {
      const r = await kp(['queue', ...c, '--help']);
      const name = ['keypool', 'queue', ...c].join(' ');
      expect(r.code, name).toBe(0);
      expect(r.stderr, name).toBe('');
      expect(r.stdout, name).toContain(`Usage: ${name}`);
      expect(r.stdout, name).toMatch(/\nExamples:\n {2}\$ \S/);
      expect(r.stdout, name).toMatch(/^ {2}\$ .*keypool queue \S/m);
      for (const l of r.stdout.split('\n')) if (!l.startsWith('  $ ')) expect(l.length, l).toBeLessThanOrEqual(80);
    }
    expect((await kp(['--help'])).stdout).toMatch(/^ {2}queue /m);
  });

  describe('usage errors exit 2, before anything is added', () => {
    it('no Redis given: says what to set', async () => {
      for (const args of [['queue', 'counts'], ['queue', 'add', '--model', 'gpt-4o-mini', '--prompt', 'hi'], ['queue', 'get', 'x', '--pool', pool]]) {
        const r = await kp(args);
        expect(r.code, args.join(' ')).toBe(2);
        expect(r.stderr).toMatch(/^error: no Redis to reach: set REDIS_URL \(or pass --redis redis:\/\/host:6379\), or name a config file with redis\.url \(--config or KEYPOOL_CONFIG\)\. keypool queue starts no embedded Redis/);
        expect(r.stdout).toBe('');
      }
    });

    it('bad options and jobs: commander\'s message or the job\'s problems', async () => {
      const before = await countsJson();
      const add = ['add', '--model', 'gpt-4o-mini', '--prompt', 'hi'];
      const cases: [string[], RegExp][] = [
        [[...add, '--priority', 'urgent'], /^error: option '--priority <priority>' argument 'urgent' is invalid\. Allowed choices are critical, normal, low\./],
        [[...add, '--deadline', 'tomorrow'], /^error: option '--deadline <when>' argument 'tomorrow' is invalid\. expected \+<n>s, \+<n>m, \+<n>h, \+<n>d \(from now\) or an ISO date-time/],
        [[...add, '--deadline', '2001-01-01T00:00:00Z'], /^error: option '--deadline <when>' argument '2001-01-01T00:00:00Z' is invalid\. the deadline is not in the future/],
        [[...add, '--deadline', '+0s'], /the deadline is not in the future/],
        [[...add, '--kind', 'images'], /^error: option '--kind <kind>' argument 'images' is invalid\. Allowed choices are chat, embeddings, responses\./],
        [[...add, '--attempts', '0'], /^error: option '--attempts <n>' argument '0' is invalid\. expected a whole number >= 1/],
        [[...add, '--wait', '-3'], /^error: option '--wait \[seconds\]' argument '-3' is invalid\. expected a number > 0/],
        [[...add, '--request', 'body.json'], /^error: option '--prompt <text>' cannot be used with option '--request <file>'/],
        [['add', '--model', 'gpt-4o-mini'], /^error: give the request: --prompt <text> \(with --model\), or --request <file\.json> \(- for stdin\)/],
        [['add', '--prompt', 'hi'], /^error: --prompt needs --model/],
        [[...add, '--kind', 'embeddings', '--max-tokens', '5'], /^error: --max-tokens is for chat and responses jobs/],
        // the job's own checks (LlmJobSchema): InvalidJobError
        [[...add, '--attempts', '99'], /^error: invalid job: attempts: /],
        [['add', '--model', 'gpt-4o-mini', '--request', join(dir, 'missing.json')], /^error: cannot read the request file .*missing\.json: no such file/],
        [['wait', 'x', '--timeout', 'soon'], /^error: option '--timeout <seconds>' argument 'soon' is invalid/],
        [['failed', '--limit', '0'], /^error: option '--limit <n>' argument '0' is invalid/],
        [['bogus'], /^error: unknown command 'bogus'/],
      ];
      for (const [args, message] of cases) {
        const r = await q(args);
        expect(r.code, args.join(' ')).toBe(2);
        expect(r.stderr, args.join(' ')).toMatch(message);
        expect(r.stdout, args.join(' ')).toBe('');
      }
      // a body from stdin that is not a JSON object; one with stream: true
      expect((await q(['add', '--request', '-'], { stdin: '[1, 2]' })).stderr).toMatch(/^error: the request body in stdin must be a JSON object/);
      expect((await q(['add', '--request', '-'], { stdin: '{"model": ' })).stderr).toMatch(/^error: the request body in stdin is not valid JSON/);
      const streaming = await q(['add', '--request', '-'], { stdin: JSON.stringify({ model: 'gpt-4o-mini', messages: [], stream: true }) });
      expect(streaming.code).toBe(2);
      expect(streaming.stderr).toBe('error: invalid job: request.stream: queued jobs do not stream: leave stream out\n');
      expect(await countsJson()).toEqual(before);
    });

    it('a URL that is not redis://, a pool name that is not one', async () => {
      const r = await kp(['queue', 'counts', '--redis', 'http://127.0.0.1:6379']);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^error: option '--redis <url>' argument 'http:\/\/127\.0\.0\.1:6379' is invalid\. expected a redis:\/\/ or rediss:\/\/ URL/);
      const env = await kp(['queue', 'counts'], { env: { REDIS_URL: 'nope' } });
      expect(env.code).toBe(2);
      expect(env.stderr).toMatch(/from env 'REDIS_URL' is invalid/);
      const p = await kp(['queue', 'counts', '--redis', url, '--pool', 'no spaces!']);
      expect(p.code).toBe(2);
      expect(p.stderr).toMatch(/^error: invalid pool name 'no spaces!': use 1-64 letters/);
    });
  });

  describe('failures exit 1', () => {
    it('an unreachable Redis: at once, its password never shown', async () => {
      const started = Date.now();
      const r = await kp(['queue', 'counts', '--redis', `redis://:${REDIS_PASSWORD}@127.0.0.1:${await closedPort()}`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error: cannot reach Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:\d+: .*ECONNREFUSED/);
      expect(Date.now() - started).toBeLessThan(7000);
    });

    it('no such job: get, wait, retry', async () => {
      for (const c of ['get', 'wait', 'retry']) {
        const r = await q([c, 'no-such-job']);
        expect(r.code, c).toBe(1);
        expect(r.stderr, c).toMatch(/^error: no job no-such-job in this pool \(never added, or no longer kept\)\n$/);
      }
    });
  });

  /** Ids of the jobs added while no worker runs: all run once the worker starts. */
  const early: string[] = [];
  let embeddingsId: string;

  describe('without a worker: jobs wait', () => {
    it('add prints the id alone; get says waiting, with kind, model, priority', async () => {
      const r = await q(['add', '--model', 'gpt-4o-mini', '--prompt', 'hello there', '--max-tokens', '4']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^\S+\n$/);
      const id = r.stdout.trim();
      early.push(id);
      expect(r.stderr).toBe(`job ${id} (chat, gpt-4o-mini, priority low) in pool ${pool}: waiting\n`);

      const got = await q(['get', id]);
      expect(got.code).toBe(0);
      const fields = Object.fromEntries(got.stdout.trimEnd().split('\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
      expect(fields).toMatchObject({ id, state: 'waiting', kind: 'chat', model: 'gpt-4o-mini', priority: 'low', attempts: '0' });
      expect(fields.enqueued).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
      expect(Object.keys(fields)).not.toContain('error');

      const json = JSON.parse((await q(['get', id, '--json'])).stdout);
      expect(json).toMatchObject({ id, kind: 'chat', model: 'gpt-4o-mini', priority: 'low', attemptsMade: 0 });
      expect(['waiting', 'prioritized']).toContain(json.state);
      // what was stored is the request --prompt built
      const job = await queue.queue.getJob(id);
      expect(job!.data.request).toEqual({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello there' }], max_tokens: 4 });
    });

    it('the same idempotency key gives the same job; the key itself is never printed', async () => {
      const a = await q(['add', '--model', 'gpt-4o-mini', '--prompt', 'once', '--idempotency-key', 'order-7-customer-x']);
      const b = await q(['add', '--model', 'gpt-4o-mini', '--prompt', 'once', '--idempotency-key', 'order-7-customer-x']);
      expect(a.code).toBe(0);
      expect(b.code).toBe(0);
      expect(b.stdout).toBe(a.stdout);
      expect(a.stdout.trim()).toBe(jobIdOf('order-7-customer-x'));
      for (const r of [a, b]) expect(r.stdout + r.stderr).not.toContain('order-7');
      early.push(a.stdout.trim());
      expect(((await queue.queue.getJobs(['waiting', 'prioritized'])) as { id?: string }[]).filter((j) => j.id === a.stdout.trim())).toHaveLength(1);
    });

    it('--request from a file (with --model, --max-tokens, --priority, --deadline, --attempts) and from stdin', async () => {
      const file = join(dir, 'body.json');
      writeFileSync(file, JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }], temperature: 0 }));
      const before = Date.now();
      const r = await q(['add', '--request', file, '--model', 'gpt-4o-mini', '--max-tokens', '6', '--priority', 'critical', '--deadline', '+10m', '--attempts', '2']);
      expect(r.code).toBe(0);
      const id = r.stdout.trim();
      early.push(id);
      expect(r.stderr).toContain('(chat, gpt-4o-mini, priority critical)');
      const job = (await queue.queue.getJob(id))!;
      expect(job.data.request).toEqual({ model: 'gpt-4o-mini', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }], temperature: 0, max_tokens: 6 });
      expect(job.data.priority).toBe('critical');
      expect(job.opts.attempts).toBe(2);
      expect(job.data.deadline! - before).toBeGreaterThanOrEqual(600_000 - 1000);
      expect(job.data.deadline! - before).toBeLessThanOrEqual(600_000 + 5000);

      const iso = new Date(Date.now() + 3_600_000).toISOString();
      const s = await q(['add', '--request', '-', '--kind', 'embeddings', '--deadline', iso], { stdin: JSON.stringify({ model: 'text-embedding-3-small', input: 'abc' }) });
      expect(s.code).toBe(0);
      embeddingsId = s.stdout.trim();
      expect(await queue.get(embeddingsId)).toMatchObject({ kind: 'embeddings', model: 'text-embedding-3-small' });
      expect((await queue.queue.getJob(embeddingsId))!.data.deadline).toBe(Date.parse(iso));
    });

    it('add --wait with no worker: exit 1 once the time is up; the job stays queued', async () => {
      const r = await q(['add', '--model', 'gpt-4o-mini', '--prompt', 'later', '--wait', '1']);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      const id = /^job (\S+) \(/.exec(r.stderr)![1]!;
      early.push(id);
      expect(r.stderr).toMatch(new RegExp(`\\nerror: job ${id} not done after 1 s \\(it is waiting\\): keypool queue wait ${id} waits again\\n$`));
      expect(['waiting', 'prioritized']).toContain((await queue.get(id))!.state);
      const w = await q(['wait', id, '--timeout', '0.5']);
      expect(w.code).toBe(1);
      expect(w.stderr).toMatch(/not done after 0\.5 s/);
    });

    it('counts: every job waiting', async () => {
      const r = await q(['counts']);
      expect(r.code).toBe(0);
      const rows = Object.fromEntries(r.stdout.trimEnd().split('\n').map((l) => l.split(/\s{2,}/)));
      const n = early.length + 1; // and the embeddings job
      expect(rows).toEqual({ STATE: 'JOBS', waiting: String(n), delayed: '0', active: '0', completed: '0', failed: '0' });
      const json = await countsJson();
      expect(json.waiting! + json.prioritized!).toBe(n);
      expect(total(json)).toBe(n);
    });
  });

  describe('add-batch', () => {
    it('a bad line: exit 2 naming each bad line, nothing added', async () => {
      const before = await countsJson();
      const file = join(dir, 'bad.jsonl');
      writeFileSync(file, [chatLine('one'), '{not json', chatLine('three'), JSON.stringify({ kind: 'chat', request: { messages: [] } }), '', chatLine('six', { priority: 'urgent' })].join('\n'));
      const r = await q(['add-batch', '--file', file]);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(new RegExp(`^error: 3 invalid line\\(s\\) in ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}, nothing added:\\n`));
      expect(r.stderr).toMatch(/^ {2}- line 2: not valid JSON/m);
      expect(r.stderr).toMatch(/^ {2}- line 4: request\.model: name a model or a route$/m);
      expect(r.stderr).toMatch(/^ {2}- line 6: priority: /m);
      expect(r.stderr).not.toMatch(/line [135]:/);
      expect(await countsJson()).toEqual(before);

      const empty = await q(['add-batch', '--file', '-'], { stdin: '\n\n' });
      expect(empty.code).toBe(2);
      expect(empty.stderr).toMatch(/^error: (no jobs in stdin|stdin is empty)/);
      expect((await q(['add-batch'])).stderr).toMatch(/^error: required option '--file <file>' not specified/);
    });

    it('a good file, then stdin: the ids in the order of the lines', async () => {
      const file = join(dir, 'good.jsonl');
      writeFileSync(file, `${[chatLine('b1'), chatLine('b2', { priority: 'low' }), '', chatLine('b3', { idempotencyKey: 'batch-b3', attempts: 2 })].join('\n')}\n`);
      const r = await q(['add-batch', '--file', file]);
      expect(r.code).toBe(0);
      const ids = r.stdout.trimEnd().split('\n');
      expect(ids).toHaveLength(3);
      expect(ids[2]).toBe(jobIdOf('batch-b3'));
      expect(r.stderr).toBe(`added 3 job(s) to pool ${pool}\n`);
      expect((await queue.get(ids[1]!))!.priority).toBe('low');
      expect(((await queue.queue.getJob(ids[0]!))!.data.request.messages as { content: string }[])[0]!.content).toBe('b1');

      const s = await q(['add-batch', '--file', '-'], { stdin: `${chatLine('s1')}\r\n${chatLine('s2')}` });
      expect(s.code).toBe(0);
      const more = s.stdout.trimEnd().split('\n');
      expect(more).toHaveLength(2);
      early.push(...ids, ...more);
      expect(total(await countsJson())).toBe(early.length + 1);
    });
  });

  describe('with a worker', () => {
    beforeAll(async () => {
      keyPool = await KeyPool.connect({ redis: connection, config: { pool, keys: [{ secret: SECRET, name: 'a', models: ['gpt-4o-mini'], baseURL: fake.url }] }, logger: new LogSink().logger });
      worker = new LlmWorker({ pool: keyPool, connection, settings: { concurrency: 4, keyWaitMs: 500, attemptTimeoutMs: 5000, lockMs: 5000, stalledCheckMs: 2000 } });
      await worker.start();
    });

    it('add --wait prints the result JSON: the answer, the model, the key, the cost', async () => {
      const r = await q(['add', '--model', 'gpt-4o-mini', '--prompt', 'hi', '--max-tokens', '4', '--wait', '30']);
      expect(r.stderr).toMatch(/^job \S+ \(chat, gpt-4o-mini, priority low\) in pool \S+: waiting; waiting for its result\n$/);
      expect(r.code).toBe(0);
      const result = JSON.parse(r.stdout);
      expect(result).toMatchObject({ model: 'gpt-4o-mini', keyId: keyPool!.knownKeys()[0]!.id, attempts: 1, failovers: 0 });
      expect(result.costUsd).toBeGreaterThan(0);
      expect(result.response).toMatchObject({ object: 'chat.completion', usage: { completion_tokens: 4 } });
      expect(r.stdout).not.toContain(SECRET);
    });

    it('the jobs added earlier run; wait prints a result; get shows it; an idempotency key hit shows completed', async () => {
      const w = await q(['wait', early[0]!, '--timeout', '30']);
      expect(w.code).toBe(0);
      expect(JSON.parse(w.stdout)).toMatchObject({ model: 'gpt-4o-mini', response: { usage: { completion_tokens: 4 } } });
      await expect.poll(async () => (await Promise.all(early.map((id) => queue.get(id)))).map((i) => i?.state), { timeout: 30_000 }).toEqual(early.map(() => 'completed'));

      const got = await q(['get', early[0]!]);
      expect(got.stdout).toMatch(/^state: +completed$/m);
      expect(got.stdout).toMatch(new RegExp(`^served by: +key ${keyPool!.knownKeys()[0]!.id}, model gpt-4o-mini$`, 'm'));
      expect(got.stdout).toMatch(/^cost: +\$0\.\d{4}$/m);
      expect(got.stdout).toMatch(/^finished: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/m);
      const json = JSON.parse((await q(['get', early[0]!, '--json'])).stdout);
      expect(json).toMatchObject({ state: 'completed', attemptsMade: 1, result: { model: 'gpt-4o-mini', response: { object: 'chat.completion' } } });

      const again = await q(['add', '--model', 'gpt-4o-mini', '--prompt', 'once', '--idempotency-key', 'order-7-customer-x']);
      expect(again.stdout.trim()).toBe(jobIdOf('order-7-customer-x'));
      expect(again.stderr).toMatch(/: completed\n$/);
      expect(fake.counters().a!.served).toBe(early.length + 1);
    });

    it('a job no key can serve fails: add --wait and wait exit 1 with the reason; failed lists them', async () => {
      const w = await q(['wait', embeddingsId, '--timeout', '30']);
      expect(w.code).toBe(1);
      expect(w.stderr).toMatch(new RegExp(`^error: job ${embeddingsId} failed: UnknownModelError: .*text-embedding-3-small`));
      const a = await q(['add', '--model', 'no-such-model', '--prompt', 'x', '--wait', '30']);
      expect(a.code).toBe(1);
      expect(a.stdout).toBe('');
      const id = /^job (\S+) \(/.exec(a.stderr)![1]!;
      expect(a.stderr).toMatch(new RegExp(`\\nerror: job ${id} failed: UnknownModelError: .*no-such-model`));

      const f = await q(['failed']);
      expect(f.code).toBe(0);
      const lines = f.stdout.trimEnd().split('\n');
      expect(lines[0]!.split(/\s{2,}/)).toEqual(['ID', 'MODEL', 'ATTEMPTS', 'FAILED AT', 'ERROR']);
      // newest first
      expect(lines.slice(1).map((l) => l.split(/\s{2,}/).slice(0, 3))).toEqual([
        [id, 'no-such-model', '1'],
        [embeddingsId, 'text-embedding-3-small', '1'],
      ]);
      expect(lines[1]).toMatch(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC {2}UnknownModelError: /);

      const json = JSON.parse((await q(['failed', '--json'])).stdout);
      expect(json.total).toBe(2);
      expect(json.jobs[0]).toMatchObject({ id, model: 'no-such-model', state: 'failed', attemptsMade: 1, error: expect.stringMatching(/^UnknownModelError: /) });
      expect(Date.parse(json.jobs[0].failedAt)).toBeGreaterThan(Date.now() - 60_000);

      const one = await q(['failed', '--limit', '1']);
      expect(one.stdout.trimEnd().split('\n')).toHaveLength(2);
      expect(one.stderr).toBe('showing the newest 1 of 2 failed jobs (--limit to see more)\n');
    });

    it('retry runs a failed job again; wait then prints its result; a job not failed is not retried', async () => {
      // every job is done: the fault below hits the next request, the one of this job
      await expect.poll(async () => { const c = await countsJson(); return c.waiting! + c.prioritized! + c.active! + c.delayed!; }, { timeout: 30_000 }).toBe(0);
      await fake.setFault({ kind: 'error', status: 503, count: 1 });
      const a = await q(['add', '--model', 'gpt-4o-mini', '--prompt', 'flaky', '--attempts', '1', '--wait', '30']);
      expect(a.code).toBe(1);
      const id = /^job (\S+) \(/.exec(a.stderr)![1]!;
      expect(a.stderr).toMatch(new RegExp(`error: job ${id} failed: .*503`));
      await fake.clearFaults();

      const r = await q(['retry', id]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^retried: job ${id} \\(gpt-4o-mini\\), now (waiting|active|completed)\\n$`));
      const w = await q(['wait', id, '--timeout', '30']);
      expect(w.code).toBe(0);
      expect(JSON.parse(w.stdout)).toMatchObject({ model: 'gpt-4o-mini', response: { object: 'chat.completion' } });

      const again = await q(['retry', id]);
      expect(again.code).toBe(1);
      expect(again.stderr).toBe(`error: job ${id} is completed: only a failed job can be retried\n`);

      const c = await q(['counts']);
      expect(c.stdout).toMatch(/^failed +2$/m);
      expect(c.stdout).toMatch(new RegExp(`^completed +${early.length + 2}$`, 'm'));
    });
  });

  describe('--config and the environment', () => {
    it("a config file gives Redis, pool and queue settings; a key whose secret this machine lacks is no problem", async () => {
      const file = join(dir, 'keypool.yaml');
      writeFileSync(
        file,
        [`redis:`, `  url: ${url}`, `pool: ${pool}`, `keys:`, `  - secretEnv: KP_QUEUE_TEST_KEY`, `    models: [gpt-4o-mini]`, `queue:`, `  attempts: 7`, ''].join('\n'),
      );
      const c = await kp(['queue', 'counts', '--json', '--config', file]);
      expect(c.stderr).toBe('');
      expect(c.code).toBe(0);
      expect(JSON.parse(c.stdout)).toEqual(await countsJson());

      const a = await kp(['queue', 'add', '--model', 'gpt-4o-mini', '--prompt', 'from config'], { env: { KEYPOOL_CONFIG: file } });
      expect(a.code).toBe(0);
      const job = (await queue.queue.getJob(a.stdout.trim()))!;
      expect(job.opts.attempts).toBe(7);
      expect((await q(['wait', a.stdout.trim(), '--timeout', '30'])).code).toBe(0);

      // REDIS_URL and KEYPOOL_POOL alone
      const e = await kp(['queue', 'counts', '--json'], { env: { REDIS_URL: url, KEYPOOL_POOL: pool } });
      expect(e.code).toBe(0);
      expect(JSON.parse(e.stdout)).toEqual(await countsJson());
    });

    it('an invalid config file: exit 2 with its problems', async () => {
      const file = join(dir, 'bad.yaml');
      writeFileSync(file, `redis:\n  url: http://nope\npool: ${pool}\n`);
      const r = await kp(['queue', 'counts', '--config', file]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^error: invalid config file .*bad\.yaml \(1 problem\):\n {2}- redis\.url: expected a redis:\/\/ or rediss:\/\/ URL\n$/);
      const noRedis = join(dir, 'no-redis.yaml');
      writeFileSync(noRedis, `pool: ${pool}\n`);
      const n = await kp(['queue', 'counts', '--config', noRedis]);
      expect(n.code).toBe(2);
      expect(n.stderr).toMatch(/^error: no Redis to reach: set REDIS_URL \(or pass --redis redis:\/\/host:6379\) or redis\.url in .*no-redis\.yaml\./);
    });
  });
});
