/**
 * The fake OpenAI upstream on its own:
 *
 *   node --import tsx packages/testkit/src/fake-openai/cli.ts --port 8787 \
 *     --keys sk-a:rpm=60:tpm=10000,sk-b --models gpt-4o-mini,text-embedding-3-small --latency 50
 *   npm run fake-openai -- --keys sk-a:rpm=60
 *
 * The first line on stdout is the base URL (`http://127.0.0.1:8787/v1`); a summary of keys (names and
 * hints, never the keys) and models goes to stderr. SIGINT / SIGTERM stop it.
 */
import { parseArgs } from 'node:util';
import { parseKeySpec, parseList, parseModelSpec } from './config.js';
import { parseLatency } from './latency.js';
import { DEFAULT_MODELS, keyHint, startFakeOpenAI } from './server.js';

const USAGE = `usage: fake-openai --keys <key>[:rpm=N][:tpm=N][:limiter=minute|window-1s|window-10s|bucket][:burst=S]
                          [:name=S][:latency=MS|P50/P99][:chunk=MS][:models=A+B][:revoked],...
                   [--models <id>[:latency=..][:chunk=MS][:reply=N][:dims=N][:type=chat|embedding],...]
                   [--port 0] [--host 127.0.0.1] [--latency MS|P50/P99] [--chunk-delay MS]
                   [--reply-tokens 32] [--max-tokens 16] [--seed N]

Control endpoints on the same port: GET /_fake/counters, POST /_fake/reset, GET /_fake/keys,
POST /_fake/keys/:key {rpm,tpm,limiter,burstSeconds,latency,chunkDelayMs,models,revoked}, GET|POST|DELETE /_fake/faults.`;

function fail(message: string): never {
  process.stderr.write(`fake-openai: ${message}\n${USAGE}\n`);
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      keys: { type: 'string' },
      models: { type: 'string' },
      latency: { type: 'string' },
      'chunk-delay': { type: 'string' },
      'reply-tokens': { type: 'string' },
      'max-tokens': { type: 'string' },
      seed: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  }));
} catch (err) {
  fail((err as Error).message);
}
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
if (!values.keys) fail('--keys is required');

const int = (text: string | undefined, what: string) => {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) fail(`${what} must be an integer >= 0`);
  return n;
};

try {
  const keys = parseList(values.keys, parseKeySpec);
  const models = values.models ? parseList(values.models, parseModelSpec) : undefined;
  const fake = await startFakeOpenAI({
    port: int(values.port, '--port'),
    host: values.host,
    keys,
    models,
    latency: values.latency ? parseLatency(values.latency) : undefined,
    chunkDelayMs: int(values['chunk-delay'], '--chunk-delay'),
    replyTokens: int(values['reply-tokens'], '--reply-tokens'),
    defaultMaxTokens: int(values['max-tokens'], '--max-tokens'),
    seed: int(values.seed, '--seed'),
  });
  process.stdout.write(`${fake.url}\n`);
  process.stderr.write(
    `fake-openai listening on ${fake.url}\n` +
      keys.map((k) => `  key ${k.name ?? keyHint(k.key)} (${keyHint(k.key)}): ${k.rpm ? `rpm ${k.rpm}` : 'rpm unlimited'}, ${k.tpm ? `tpm ${k.tpm}` : 'tpm unlimited'}, limiter ${k.limiter ?? 'minute'}\n`).join('') +
      `  models: ${(models?.map((m) => m.id) ?? DEFAULT_MODELS).join(', ')}\n` +
      `  control: ${fake.origin}/_fake/counters\n`,
  );
  const shutdown = () => {
    void fake.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
} catch (err) {
  fail((err as Error).message);
}
