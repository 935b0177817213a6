/**
 * `keypool queue ...`: the LLM job queue of a pool, for producers and operators. Add jobs (one, or
 * a JSONL batch), read them back, wait for a result, list and retry failed ones, count them. Needs
 * only the pool's Redis and its name (no provider key): `keypool worker` processes consume the jobs.
 *
 * Redis and pool come from --config (its redis.url, pool name and queue settings) or from --redis
 * (env REDIS_URL) and --pool (env KEYPOOL_POOL, default "default"); there is no embedded Redis here.
 * A request body is printed only inside a result the user asked for (get --json, wait, add --wait);
 * a Redis password is never printed.
 */
import { readFile } from 'node:fs/promises';
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { Cluster, Redis } from 'ioredis';
import type { RedisConnection } from '@keypool/core';
import type { LlmJobInfo, LlmJobInput, LlmJobKind, LlmJobResult, LlmQueue, LlmQueueOptions } from '@keypool/worker/queue';
import type { Context } from '../context.js';
import { CliError, usageError } from '../errors.js';
import { NONE, table, usd, type Cell } from '../format.js';
import { examples, integer, paragraphs, positive } from '../options.js';

/** Seconds `wait` and `add --wait` wait for a job by default. */
export const DEFAULT_WAIT_S = 300;
/** How long to wait for Redis to answer before giving up (ms). */
const CONNECT_TIMEOUT_MS = 5000;
/** Most bytes read for a request body or a batch file. */
const REQUEST_LIMIT = 8 * 1024 * 1024;
const BATCH_LIMIT = 256 * 1024 * 1024;
/** Jobs per BullMQ addBulk call of add-batch (one MULTI each). */
const BATCH_CHUNK = 500;
/** Bad lines of a batch listed in the error (the count says how many more). */
const BAD_LINES_SHOWN = 20;
/** Stands in for provider keys the config file names but this machine does not have (never used). */
const KEY_PLACEHOLDER = 'keypool-queue-placeholder-never-used';

const KINDS = ['chat', 'embeddings', 'responses'] as const;
const PRIORITIES = ['critical', 'normal', 'low'] as const;

interface ConnOptions {
  config?: string;
  redis?: string;
  pool?: string;
}

interface AddOptions extends ConnOptions {
  model?: string;
  prompt?: string;
  request?: string;
  kind: LlmJobKind;
  priority?: (typeof PRIORITIES)[number];
  tenant?: string;
  idempotencyKey?: string;
  deadline?: number;
  attempts?: number;
  maxTokens?: number;
  wait?: number | true;
}

// ---------------------------------------------------------------------------------------------
// argument parsers

/** A redis:// or rediss:// URL. */
export function redisUrl(value: string): string {
  try {
    const u = new URL(value);
    if (u.protocol === 'redis:' || u.protocol === 'rediss:') return value;
  } catch {
    // reported below
  }
  throw new InvalidArgumentError('expected a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379');
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `+30s`, `+5m`, `+2h`, `+1d`, `+500ms` from now, or an ISO date-time: epoch ms, in the future. */
export function deadline(value: string, now = Date.now()): number {
  const rel = /^\+(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value.trim());
  let at: number;
  if (rel) at = now + Number(rel[1]) * UNIT_MS[rel[2]!]!;
  else if (/^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(value.trim())) at = Date.parse(value.trim());
  else throw new InvalidArgumentError('expected +<n>s, +<n>m, +<n>h, +<n>d (from now) or an ISO date-time such as 2030-01-31T18:00:00Z');
  if (!Number.isFinite(at)) throw new InvalidArgumentError('not a valid date-time');
  if (at <= now) throw new InvalidArgumentError('the deadline is not in the future');
  return Math.round(at);
}

/** `redis://:***@host:6379/0`: a password is never printed. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

// ---------------------------------------------------------------------------------------------
// commands

export function registerQueue(program: Command, ctx: Context): void {
  const queue = program
    .command('queue')
    .description("add LLM jobs to a pool's queue, read them back, wait for results, retry failed ones (needs the pool's Redis only)")
    .addHelpText(
      'after',
      paragraphs(
        'keypool worker processes consume the queue: each job is one OpenAI-style call (chat, embeddings or responses) through the pool, with failover across keys and retries of transient failures; its result (the answer, model, key, cost) is kept on it. These commands only need to reach the Redis the workers use, not a provider key.',
        'Every queue command takes --config <file> (env KEYPOOL_CONFIG; its redis.url, pool name and queue settings) or --redis <url> (env REDIS_URL) with --pool <name> (env KEYPOOL_POOL, default "default"). No embedded Redis here.',
        'Exit codes: 0 done; 1 failed (Redis unreachable, the job failed or was not done in time, no such job, not retryable); 2 usage (bad option, no Redis given, an invalid job or batch line, invalid config file).',
      ) +
        examples(
          'export REDIS_URL=redis://redis:6379 KEYPOOL_POOL=prod',
          'ID=$(keypool queue add --model gpt-4o-mini --prompt "Summarise: ...")',
          'keypool queue wait "$ID" | jq -r ".response.choices[0].message.content"',
          'keypool queue add-batch --file jobs.jsonl > ids.txt',
          'keypool queue failed',
          'keypool queue counts',
        ),
    );

  // ---- add
  const add = queue
    .command('add')
    .description('add one job: print its id (or, with --wait, its result when done)')
    .option('--model <model>', 'the model or route to ask (sets the request body\'s model)')
    .addOption(new Option('--prompt <text>', 'the user message (chat) or the input (embeddings, responses)').conflicts('request'))
    .addOption(new Option('--request <file>', 'the request body as JSON, as for the OpenAI API; - reads it from stdin'))
    .addOption(new Option('--kind <kind>', 'which endpoint').choices(KINDS).default('chat'))
    .addOption(new Option('--priority <priority>', 'critical runs first, low (the default for jobs) leaves the share priority.keepFree to interactive calls').choices(PRIORITIES))
    .option('--tenant <name>', "whose job it is: tenants of a class share the pool by weight (priority.weights) when it is the bottleneck")
    .option('--idempotency-key <key>', 'adding again with the same key returns the same job while it is kept')
    .option('--deadline <when>', 'fail the job if not done by then: +30s, +5m, +2h or an ISO date-time', (v: string) => deadline(v, ctx.clock.now()))
    .option('--attempts <n>', 'attempts for transient failures (default: the queue settings, 5)', integer(1))
    .option('--max-tokens <n>', 'cap on output tokens (chat: max_tokens, responses: max_output_tokens)', integer(1))
    .addOption(new Option('--wait [seconds]', `wait for the result and print it (default ${DEFAULT_WAIT_S} s)`).argParser(positive))
    .addHelpText(
      'after',
      paragraphs(
        '--prompt builds the body: chat {model, messages: [{role: "user", content}]}, embeddings and responses {model, input}. --request gives the whole body instead (a file, or - for stdin); --model and --max-tokens then set those fields of it. No streaming: a job\'s result is stored whole.',
        'Output: the job id alone on stdout, so that $(...) captures it. With --wait: the result JSON (response, model, keyId, costUsd, failovers, attempts, waitedMs, finishedAt) once done; exit 1 with the reason if the job failed or was not done in time (it stays queued: keypool queue wait <id>).',
        'An idempotency key is stored hashed (the job id is derived from it). An invalid job (no model, a chat without messages, stream: true...) exits 2 listing every problem.',
      ) +
        examples(
          'keypool queue add --model gpt-4o-mini --prompt "Translate to French: good morning"',
          'keypool queue add --model gpt-4o --prompt "..." --priority critical --wait 120',
          'keypool queue add --kind embeddings --model text-embedding-3-small --prompt "some text"',
          'keypool queue add --request body.json --idempotency-key order-42 --deadline +10m',
          'jq -n \'{model:"gpt-4o-mini",messages:[{role:"user",content:"hi"}]}\' | keypool queue add --request -',
        ),
    );
  addConnOptions(add).action(withQueue(async (q, _lib, opts: AddOptions) => {
    const input = await jobOf(opts);
    const info = await q.llm.add(input);
    // a job already there with the same idempotency key shows its own state (active, completed...)
    const note = `job ${info.id} (${info.kind}, ${info.model}, priority ${info.priority}) in pool ${q.pool}: ${stateText(info.state)}`;
    if (opts.wait === undefined) {
      ctx.out(`${info.id}\n`);
      ctx.err(`${note}\n`);
      return;
    }
    ctx.err(`${note}; waiting for its result\n`);
    const result = await waitFor(q.llm, info.id, opts.wait === true ? DEFAULT_WAIT_S : opts.wait);
    ctx.out(`${JSON.stringify(result, null, 2)}\n`);
  }));

  // ---- add-batch
  const addBatch = queue
    .command('add-batch')
    .description('add jobs from a JSONL file (one job per line): print their ids, one per line')
    .requiredOption('--file <file>', 'the jobs, one JSON object per line; - reads them from stdin')
    .addHelpText(
      'after',
      paragraphs(
        'Each line is a job as the LlmQueue API takes it: {"kind": "chat", "request": {...}, "priority": "low", "idempotencyKey": "...", "deadline": "2030-01-31T18:00:00Z" or epoch ms, "attempts": 3}; kind and request are required. Blank lines are skipped.',
        'Every line is checked first: if any is invalid, nothing is added and the command exits 2 naming each bad line. Output: the job ids in the order of the lines, one per line (a line whose idempotency key is already queued gives that job\'s id).',
      ) +
        examples(
          'keypool queue add-batch --file jobs.jsonl > ids.txt',
          'jq -c \'{kind:"embeddings",request:{model:"text-embedding-3-small",input:.text}}\' docs.json | keypool queue add-batch --file -',
        ),
    );
  addConnOptions(addBatch).action(withQueue(async (q, lib, opts: ConnOptions & { file: string }) => {
    const text = opts.file === '-' ? await readStdin('the jobs', BATCH_LIMIT) : await readInput(opts.file, 'jobs file', BATCH_LIMIT);
    const inputs = parseBatch(text, opts.file === '-' ? 'stdin' : opts.file, lib.LlmJobSchema);
    const ids: string[] = [];
    for (let i = 0; i < inputs.length; i += BATCH_CHUNK) {
      const added = await q.llm.addBulk(inputs.slice(i, i + BATCH_CHUNK)).catch((e: unknown) => {
        if (i === 0) throw e;
        throw new CliError('QUEUE_FAILED', `only the first ${i} of ${inputs.length} jobs were added (their ids are on stdout): ${(e as Error).message}`, { cause: e });
      });
      ids.push(...added.map((j) => j.id));
      ctx.out(added.map((j) => `${j.id}\n`).join(''));
    }
    ctx.err(`added ${ids.length} job(s) to pool ${q.pool}\n`);
  }));

  // ---- get
  const get = queue
    .command('get <id>')
    .description("a job: state, kind, model, priority, when it was added, attempts, and its result's cost, model and key, or its error")
    .option('--json', 'the whole job as JSON, the result (with the answer) included')
    .addHelpText(
      'after',
      paragraphs('States: waiting (queued), delayed (waiting for a key, or backing off before another attempt), active, completed, failed. Done and failed jobs are kept for the time the queue settings say (1 day, 7 days by default).') +
        examples('keypool queue get idem-3c1f0a9e2b7d4c5e6f708192a3b4c5d6', 'keypool queue get 42 --json | jq .result.response'),
    );
  addConnOptions(get).action(withQueue(async (q, _lib, id: string, opts: ConnOptions & { json?: boolean }) => {
    const info = await q.llm.get(id);
    if (!info) throw noJob(id);
    ctx.out(opts.json ? `${JSON.stringify(info, null, 2)}\n` : jobText(info));
  }));

  // ---- wait
  const wait = queue
    .command('wait <id>')
    .description('wait for a job to be done and print its result JSON (exit 1 if it failed)')
    .option('--timeout <seconds>', `give up after this long (default ${DEFAULT_WAIT_S})`, positive)
    .addHelpText(
      'after',
      paragraphs('Output: the result JSON (response, model, keyId, costUsd, failovers, attempts, waitedMs, finishedAt). A job done already prints at once. Exit 1 with the reason if it failed, or if it was not done in time (it stays queued).') +
        examples('keypool queue wait 42', 'keypool queue wait "$ID" --timeout 600 | jq .costUsd'),
    );
  addConnOptions(wait).action(withQueue(async (q, _lib, id: string, opts: ConnOptions & { timeout?: number }) => {
    const result = await waitFor(q.llm, id, opts.timeout ?? DEFAULT_WAIT_S);
    ctx.out(`${JSON.stringify(result, null, 2)}\n`);
  }));

  // ---- failed
  const failed = queue
    .command('failed')
    .description('failed jobs, newest first: id, model, attempts, when, error')
    .option('--json', 'print JSON (for scripts): the jobs with their whole error')
    .option('--limit <n>', 'show at most this many (default 20)', integer(1))
    .addHelpText(
      'after',
      paragraphs('A job fails when the provider refuses the request (4xx: the error is kept as it came), no key serves its model, its deadline passes, or its attempts run out on transient failures. Run one again with keypool queue retry <id>.') +
        examples('keypool queue failed', 'keypool queue failed --limit 100 --json | jq -r ".jobs[].id"'),
    );
  addConnOptions(failed).action(withQueue(async (q, _lib, opts: ConnOptions & { json?: boolean; limit?: number }) => {
    const limit = opts.limit ?? 20;
    const [infos, counts] = await Promise.all([q.llm.failed(0, limit - 1), q.llm.counts()]);
    // when each failed (LlmJobInfo has only the time it was added)
    const jobs = await Promise.all(infos.map((i) => q.llm.queue.getJob(i.id)));
    const rows = infos.map((info, n) => ({ ...info, failedAt: jobs[n]?.finishedOn ? new Date(jobs[n]!.finishedOn!).toISOString() : undefined }));
    const total = counts.failed ?? rows.length;
    if (opts.json) ctx.out(`${JSON.stringify({ total, jobs: rows }, null, 2)}\n`);
    else if (rows.length === 0) ctx.out(`no failed jobs in pool ${q.pool}\n`);
    else {
      const cells = rows.map((r): Cell[] => [r.id, r.model, String(r.attemptsMade), r.failedAt ? utc(r.failedAt) : NONE, { text: oneLine(r.error ?? NONE, 100), style: 'red' }]);
      ctx.out(table(['ID', 'MODEL', 'ATTEMPTS', 'FAILED AT', 'ERROR'], cells, { color: ctx.color, right: [2] }));
    }
    if (!opts.json && total > rows.length) ctx.err(`showing the newest ${rows.length} of ${total} failed jobs (--limit to see more)\n`);
  }));

  // ---- retry
  const retry = queue
    .command('retry <id>')
    .description('run a failed job again (its attempts start over)')
    .option('--json', 'print the job as JSON')
    .addHelpText('after', paragraphs('Only a failed job can be retried; it keeps its id, request and priority. Then keypool queue wait <id> waits for it.') + examples('keypool queue retry 42', 'keypool queue retry 42 && keypool queue wait 42'));
  addConnOptions(retry).action(withQueue(async (q, lib, id: string, opts: ConnOptions & { json?: boolean }) => {
    if (!(await q.llm.get(id))) throw noJob(id);
    let info: LlmJobInfo;
    try {
      info = await q.llm.retry(id);
    } catch (e) {
      if (e instanceof lib.InvalidJobError) throw new CliError('QUEUE_FAILED', e.message, { cause: e });
      throw e;
    }
    ctx.out(opts.json ? `${JSON.stringify(info, null, 2)}\n` : `retried: job ${id} (${info.model}), now ${stateText(info.state)}\n`);
  }));

  // ---- counts
  const counts = queue
    .command('counts')
    .description('jobs per state: waiting, delayed, active, completed, failed')
    .option('--json', "print BullMQ's counts as JSON (waiting and prioritized apart)")
    .addHelpText(
      'after',
      paragraphs('waiting counts every queued job (BullMQ keeps jobs with a priority apart, as prioritized: --json shows both); delayed, those waiting for a key or backing off; completed and failed, those still kept.') +
        examples('keypool queue counts', 'keypool queue counts --json | jq .failed'),
    );
  addConnOptions(counts).action(withQueue(async (q, _lib, opts: ConnOptions & { json?: boolean }) => {
    const c = await q.llm.counts();
    if (opts.json) {
      ctx.out(`${JSON.stringify(c, null, 2)}\n`);
      return;
    }
    const n = (k: string) => c[k] ?? 0;
    const rows: Cell[][] = [
      ['waiting', String(n('waiting') + n('prioritized'))],
      ['delayed', String(n('delayed'))],
      ['active', String(n('active'))],
      ['completed', String(n('completed'))],
      ['failed', n('failed') > 0 ? { text: String(n('failed')), style: 'red' } : '0'],
    ];
    ctx.out(table(['STATE', 'JOBS'], rows, { color: ctx.color, right: [1] }));
  }));
}

/** --config, --redis, --pool. */
function addConnOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('-c, --config <file>', 'a keypool.yaml: its redis.url, pool name and queue settings').env('KEYPOOL_CONFIG'))
    .addOption(new Option('--redis <url>', "the pool's Redis (wins over the file; prefer the env var if it has a password)").env('REDIS_URL').argParser(redisUrl))
    .addOption(new Option('--pool <name>', 'the pool name (wins over the file; default "default")').env('KEYPOOL_POOL'));
}

// ---------------------------------------------------------------------------------------------
// Redis, pool and the queue

type WorkerLib = typeof import('@keypool/worker/queue');

interface Opened {
  llm: LlmQueue;
  pool: string;
}

/**
 * Runs `action` with an LlmQueue on the Redis and pool the options name, and closes every
 * connection after. @keypool/worker (BullMQ) and ioredis are loaded here, not when the CLI starts.
 * commander calls an action with the arguments, the options and the command: `action` gets the
 * arguments and the options.
 */
function withQueue<A extends unknown[]>(action: (q: Opened, lib: WorkerLib, ...args: A) => Promise<void>): (...args: [...A, Command]) => Promise<void> {
  return async (...all: [...A, Command]) => {
    const args = all.slice(0, -1) as unknown as A;
    const opts = args[args.length - 1] as ConnOptions;
    const target = await targetOf(opts);
    const lib = await import('@keypool/worker/queue');
    const conn = await connect(target.conn);
    const llm = new lib.LlmQueue({ connection: conn.redis, pool: target.pool, ...target.settings });
    try {
      await action({ llm, pool: target.pool }, lib, ...args);
    } catch (e) {
      // the job asked for is invalid (retry and wait map their own "no such job" first)
      if (e instanceof lib.InvalidJobError) throw usageError(e.message);
      throw e;
    } finally {
      await llm.close().catch(() => undefined);
      await conn.close();
    }
  };
}

interface Target {
  conn: RedisConnection;
  pool: string;
  settings: Partial<Pick<LlmQueueOptions, 'attempts' | 'backoffMs' | 'keepCompletedS' | 'keepCompleted' | 'keepFailedS'>>;
}

/** The user, password and TLS settings of a connection (the file's, else REDIS_USERNAME / REDIS_PASSWORD), without its target. */
function credentialsOf(conn: RedisConnection | undefined): Pick<RedisConnection, 'username' | 'password' | 'tls'> {
  const out: Pick<RedisConnection, 'username' | 'password' | 'tls'> = {};
  const username = conn?.username ?? process.env.REDIS_USERNAME;
  const password = conn?.password ?? process.env.REDIS_PASSWORD;
  if (username) out.username = username;
  if (password) out.password = password;
  if (conn?.tls) out.tls = conn.tls;
  return out;
}

async function targetOf(opts: ConnOptions): Promise<Target> {
  // without a file, REDIS_SENTINELS / REDIS_CLUSTER_SEEDS (and the credentials' env vars) still name a Redis
  const fromEnvOnly = opts.config === undefined && opts.redis === undefined && (process.env.REDIS_SENTINELS || process.env.REDIS_CLUSTER_SEEDS);
  const file = opts.config !== undefined || fromEnvOnly ? await producerConfig(opts.config) : undefined;
  // --redis (or REDIS_URL) names where Redis is, as it does for serve and worker: the file's (or the
  // environment's) user, password and TLS settings still apply
  const conn: RedisConnection | undefined = opts.redis !== undefined ? { ...credentialsOf(file?.conn), url: opts.redis } : file?.conn;
  if (!conn) {
    throw usageError(
      `no Redis to reach: set REDIS_URL (or pass --redis redis://host:6379)${file ? ` or redis.url in ${opts.config}` : ', or name a config file with redis.url (--config or KEYPOOL_CONFIG)'}. keypool queue starts no embedded Redis: it needs the one the workers use`,
    );
  }
  const pool = opts.pool ?? file?.pool ?? 'default';
  const { PoolConfigSchema } = await import('@keypool/core');
  const named = PoolConfigSchema.shape.pool.safeParse(pool);
  if (!named.success) throw usageError(`invalid pool name '${pool}': ${named.error.issues[0]?.message ?? 'invalid'}`);
  return { conn, pool, settings: file?.settings ?? {} };
}

/**
 * The Redis URL, pool name and queue settings of a config file, loaded as serve and worker load it
 * (${VAR} interpolation, env overrides, every problem listed, exit 2). A producer needs no provider
 * key: a key whose secret comes from an environment variable not set here gets a placeholder (never
 * used: the keys of the file are not read), so that the file of the workers serves as it is.
 */
async function producerConfig(file: string | undefined): Promise<{ conn?: RedisConnection; pool: string; settings: Target['settings'] }> {
  const [{ loadGatewayConfig, redisConnection }, { isConfigError }] = await Promise.all([import('@keypool/config'), import('@keypool/core')]);
  const load = (env: NodeJS.ProcessEnv) => {
    const c = loadGatewayConfig({ ...(file !== undefined ? { file } : {}), env });
    const { attempts, backoffMs, keepCompletedS, keepCompleted, keepFailedS } = c.queue;
    const conn = redisConnection(c.redis);
    return { ...(conn ? { conn } : {}), pool: c.pool.pool, settings: { attempts, backoffMs, keepCompletedS, keepCompleted, keepFailedS } };
  };
  try {
    try {
      return load(process.env);
    } catch (e) {
      if (!isConfigError(e)) throw e;
      const missing = new Set<string>();
      for (const i of e.issues) {
        const m = /^environment variable ([A-Za-z_][A-Za-z0-9_]*) is (?:not set|empty)$/.exec(i.message);
        if (m && /^keys\[\d+\]/.test(i.path)) missing.add(m[1]!);
      }
      if (missing.size === 0) throw e;
      return load({ ...process.env, ...Object.fromEntries([...missing].map((v) => [v, KEY_PLACEHOLDER])) });
    }
  } catch (e) {
    if (isConfigError(e)) throw new CliError('CONFIG_INVALID', e.message, { cause: e });
    throw e;
  }
}

/**
 * A connection BullMQ may use (maxRetriesPerRequest null), checked to answer within
 * CONNECT_TIMEOUT_MS: an unreachable Redis is exit 1 at once, not a command waiting forever.
 * LlmQueue.wait duplicates it for its QueueEvents, and BullMQ never closes a connection it was
 * given: the duplicates are tracked here and closed with it.
 */
async function connect(conn: RedisConnection): Promise<{ redis: Redis | Cluster; close(): Promise<void> }> {
  const { createRedis } = await import('@keypool/core');
  const redis = createRedis(conn, 'cli', { redisOptions: { connectTimeout: CONNECT_TIMEOUT_MS } });
  let lastError: Error | undefined;
  redis.on('error', (e: Error) => (lastError = e));
  const duplicates: (Redis | Cluster)[] = [];
  const duplicate = (redis as Redis).duplicate.bind(redis);
  (redis as Redis).duplicate = ((override?: Parameters<Redis['duplicate']>[0]) => {
    const d = duplicate(override);
    duplicates.push(d);
    return d;
  }) as Redis['duplicate'];
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.connect(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS + 500);
      }),
    ]);
  } catch (e) {
    redis.disconnect();
    const why = lastError?.message || (e as Error).message;
    const { describeRedis } = await import('@keypool/core');
    throw new CliError('QUEUE_FAILED', `cannot reach Redis at ${describeRedis(conn)}: ${why}`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
  return {
    redis,
    async close() {
      for (const d of duplicates) d.disconnect();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

// ---------------------------------------------------------------------------------------------
// add

/** The job `add` was asked for (the body from --prompt or --request, the options on it). */
async function jobOf(opts: AddOptions): Promise<LlmJobInput> {
  let request: Record<string, unknown>;
  if (opts.prompt !== undefined) {
    if (opts.model === undefined) throw usageError('--prompt needs --model: the model or route to ask');
    request = opts.kind === 'chat' ? { model: opts.model, messages: [{ role: 'user', content: opts.prompt }] } : { model: opts.model, input: opts.prompt };
  } else if (opts.request !== undefined) {
    const text = opts.request === '-' ? await readStdin('the request body', REQUEST_LIMIT) : await readInput(opts.request, 'request file', REQUEST_LIMIT);
    const where = opts.request === '-' ? 'stdin' : opts.request;
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (e) {
      throw usageError(`the request body in ${where} is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw usageError(`the request body in ${where} must be a JSON object, as for the OpenAI API`);
    request = { ...(body as Record<string, unknown>) };
    if (opts.model !== undefined) request.model = opts.model;
  } else {
    throw usageError('give the request: --prompt <text> (with --model), or --request <file.json> (- for stdin)');
  }
  if (opts.maxTokens !== undefined) {
    if (opts.kind === 'embeddings') throw usageError('--max-tokens is for chat and responses jobs: embeddings have no output tokens');
    request[opts.kind === 'chat' ? 'max_tokens' : 'max_output_tokens'] = opts.maxTokens;
  }
  return {
    kind: opts.kind,
    request,
    ...(opts.priority !== undefined ? { priority: opts.priority } : {}),
    ...(opts.tenant !== undefined ? { tenant: opts.tenant } : {}),
    ...(opts.idempotencyKey !== undefined ? { idempotencyKey: opts.idempotencyKey } : {}),
    ...(opts.deadline !== undefined ? { deadline: opts.deadline } : {}),
    ...(opts.attempts !== undefined ? { attempts: opts.attempts } : {}),
  };
}

/** The lines of a JSONL batch, each checked (JSON, then the job schema): exit 2 naming every bad line. */
export function parseBatch(text: string, where: string, schema: WorkerLib['LlmJobSchema']): LlmJobInput[] {
  const inputs: LlmJobInput[] = [];
  const bad: string[] = [];
  text.replace(/^\uFEFF/, '')
    .split(/\r?\n/)
    .forEach((line, i) => {
      if (line.trim() === '') return;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (e) {
        bad.push(`line ${i + 1}: not valid JSON (${(e as Error).message})`);
        return;
      }
      const r = schema.safeParse(value);
      if (r.success) inputs.push(value as LlmJobInput);
      else bad.push(`line ${i + 1}: ${r.error.issues.map((x) => `${x.path.length ? `${x.path.join('.')}: ` : ''}${x.message}`).join('; ')}`);
    });
  if (bad.length > 0) {
    const more = bad.length > BAD_LINES_SHOWN ? `\n  ... and ${bad.length - BAD_LINES_SHOWN} more` : '';
    throw usageError(`${bad.length} invalid line(s) in ${where}, nothing added:\n${bad.slice(0, BAD_LINES_SHOWN).map((b) => `  - ${b}`).join('\n')}${more}`);
  }
  if (inputs.length === 0) throw usageError(`no jobs in ${where}: give one JSON job per line`);
  return inputs;
}

// ---------------------------------------------------------------------------------------------
// wait

/** The result of job `id` once done; exit 1 if it failed, was not done within `seconds` or is unknown. */
async function waitFor(llm: LlmQueue, id: string, seconds: number): Promise<LlmJobResult> {
  if (!(await llm.get(id))) throw noJob(id);
  try {
    return await llm.wait(id, Math.round(seconds * 1000));
  } catch (e) {
    // failed, or not done in time: the job's state says which
    const info = await llm.get(id);
    if (info?.state === 'completed' && info.result) return info.result;
    if (info?.state === 'failed') throw new CliError('QUEUE_FAILED', `job ${id} failed: ${info.error ?? (e as Error).message}`, { cause: e });
    if (!info) throw noJob(id);
    throw new CliError('QUEUE_FAILED', `job ${id} not done after ${seconds} s (it is ${stateText(info.state)}): keypool queue wait ${id} waits again`, { cause: e });
  }
}

const noJob = (id: string) => new CliError('QUEUE_FAILED', `no job ${id} in this pool (never added, or no longer kept)`);

// ---------------------------------------------------------------------------------------------
// input

async function readInput(file: string, what: string, limit: number): Promise<string> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw usageError(`cannot read the ${what} ${file}: ${code === 'ENOENT' ? 'no such file' : ((e as Error).message ?? String(e))}`);
  }
  if (buf.length > limit) throw usageError(`the ${what} ${file} is larger than ${limit / 1024 / 1024} MiB`);
  return buf.toString('utf8');
}

async function readStdin(what: string, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += b.length;
    if (size > limit) throw usageError(`stdin holds more than ${limit / 1024 / 1024} MiB for ${what}`);
    chunks.push(b);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw usageError(`stdin is empty: give ${what} on stdin (or name a file)`);
  return text;
}

// ---------------------------------------------------------------------------------------------
// output

/** BullMQ keeps jobs with a priority in 'prioritized': for people, they are waiting. */
export const stateText = (state: string) => (state === 'prioritized' ? 'waiting' : state);

const utc = (iso: string) => `${iso.slice(0, 19).replace('T', ' ')} UTC`;

function oneLine(s: string, max: number): string {
  const line = s.replace(/\s+/g, ' ').trim();
  return [...line].length > max ? `${[...line].slice(0, max - 3).join('')}...` : line;
}

/** `get` as text: one `label: value` line per field. */
export function jobText(info: LlmJobInfo): string {
  const rows: [string, string][] = [
    ['id', info.id],
    ['state', stateText(info.state)],
    ['kind', info.kind],
    ['model', info.model],
    ['priority', info.priority],
    ...(info.tenant !== undefined ? ([['tenant', info.tenant]] as [string, string][]) : []),
    ['enqueued', utc(info.enqueuedAt)],
    ['attempts', String(info.attemptsMade)],
  ];
  const r = info.result;
  if (r) {
    rows.push(['served by', `key ${r.keyId}, model ${r.model}${r.failovers ? `, after ${r.failovers} failover(s)` : ''}`]);
    rows.push(['cost', usd(r.costUsd)]);
    rows.push(['waited', `${Math.max(0, Math.round(r.waitedMs))} ms`]);
    rows.push(['finished', utc(r.finishedAt)]);
  }
  if (info.error && info.state !== 'completed') rows.push([info.state === 'failed' ? 'error' : 'last error', info.error]);
  const w = Math.max(...rows.map(([k]) => k.length)) + 2;
  return rows.map(([k, v]) => `${`${k}:`.padEnd(w)}${v}`).join('\n') + '\n';
}
