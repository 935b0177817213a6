/**
 * AwsSecretsManagerSource over real HTTP with the real AWS SDK client (@aws-sdk/client-secrets-manager).
 *
 * By default the tests run against the fake Secrets Manager of @keypool/testkit (AWS's JSON 1.1
 * protocol, SigV4 signatures verified, fault injection and counters): nothing to set up.
 *
 * Against LocalStack (docker compose up -d localstack), the same file:
 *
 *   AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
 *     npx vitest run --project unit packages/secrets/test/aws.wire.test.ts
 *
 * Against real AWS (creates secrets named keypool-test/<random>/openai and force-deletes them at
 * the end; the identity needs secretsmanager:CreateSecret, GetSecretValue, PutSecretValue,
 * DescribeSecret, UpdateSecretVersionStage and DeleteSecret on keypool-test/*):
 *
 *   KEYPOOL_TEST_AWS=real AWS_REGION=eu-west-1 AWS_PROFILE=<profile> npx vitest run --project unit packages/secrets/test/aws.wire.test.ts
 *
 * Outside the fake the source finds its endpoint, region and credentials through the SDK's own
 * chains (AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE...), and the tests that need fault injection or
 * the fake's counters are skipped. LocalStack accepts any credentials, so the wrong-credentials tests
 * run against the fake and real AWS only.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import {
  CreateSecretCommand,
  DeleteSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
  type CreateSecretCommandInput,
  type SecretsManagerClientConfig,
} from '@aws-sdk/client-secrets-manager';
import { KeySpecSchema, type KeySpec, type KeySpecInput } from '@keypool/core';
import { startFakeSecretsManager, type FakeSecretsManager, type FakeSecretsOperation } from '@keypool/testkit/fake-aws-secrets';
import { LogSink } from '@keypool/testkit/log-sink';
import { ConfiguredRetryStrategy } from '@smithy/core/retry';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { AwsSecretsManagerSource, AwsSourceConfigSchema, type AwsSourceConfigInput, type AwsSourceOptions } from '../src/aws.js';
import { SecretLoader, type LoaderOptions } from '../src/loader.js';
import { isSecretSourceError, SecretSourceError } from '../src/types.js';

const TARGET: 'fake' | 'localstack' | 'aws' = process.env.AWS_ENDPOINT_URL ? 'localstack' : process.env.KEYPOOL_TEST_AWS === 'real' ? 'aws' : 'fake';
const onFake = TARGET === 'fake';
/** LocalStack takes any credentials. */
const checksCredentials = TARGET !== 'localstack';

let fake: FakeSecretsManager | undefined;
let admin: SecretsManagerClient;
const createdArns: string[] = [];
const sources: AwsSecretsManagerSource[] = [];
const sink = new LogSink();
/** Every key secret and AWS secret access key the tests used: none may appear in an error or a log line. */
const secretsUsed: string[] = [];
/** Every error the tests saw, checked for secrets at the end. */
const errorsSeen: unknown[] = [];

/** The SDK's standard retries with 5 ms delays (the default backoff for throttling starts at 1 s). */
const fastRetry = (maxAttempts: number) => new ConfiguredRetryStrategy(maxAttempts, () => 5);

function keySecret(tag = 'k'): string {
  const s = `sk-test-${tag}-${randomBytes(12).toString('hex')}`;
  secretsUsed.push(s);
  return s;
}

function clientConfig(extra: SecretsManagerClientConfig = {}): SecretsManagerClientConfig {
  return { ...(fake ? { credentials: fake.credentials } : {}), retryStrategy: fastRetry(3), ...extra };
}

function configFor(secretId: string, extra: Partial<AwsSourceConfigInput> = {}): AwsSourceConfigInput {
  return { type: 'aws', secretId, ...(fake ? { endpoint: fake.url, region: fake.region } : {}), ...extra };
}

function makeSource(secretId: string, extra: Partial<AwsSourceConfigInput> = {}, options: AwsSourceOptions = {}): AwsSecretsManagerSource {
  const s = new AwsSecretsManagerSource(AwsSourceConfigSchema.parse(configFor(secretId, extra)), { logger: sink.logger, clientConfig: clientConfig(), ...options });
  sources.push(s);
  return s;
}

function loader(source: AwsSecretsManagerSource, options: LoaderOptions = {}): SecretLoader {
  return new SecretLoader(source, { timeoutMs: 3000, attempts: 3, backoffMs: 5, maxBackoffMs: 20, logger: sink.logger, ...options });
}

async function createSecret(value: unknown, extra: Partial<CreateSecretCommandInput> = {}): Promise<{ name: string; arn: string; versionId: string }> {
  const name = `keypool-test/${randomUUID().slice(0, 8)}/openai`;
  const input: CreateSecretCommandInput = { Name: name, ...extra };
  if (value !== undefined) input.SecretString = typeof value === 'string' ? value : JSON.stringify(value);
  const out = await admin.send(new CreateSecretCommand(input));
  createdArns.push(out.ARN!);
  return { name, arn: out.ARN!, versionId: out.VersionId ?? '' };
}

async function putValue(secretId: string, value: unknown, stages?: string[]): Promise<string> {
  const out = await admin.send(new PutSecretValueCommand({ SecretId: secretId, SecretString: JSON.stringify(value), ...(stages ? { VersionStages: stages } : {}) }));
  return out.VersionId!;
}

async function stagesOf(secretId: string): Promise<Record<string, string[]>> {
  const d = await admin.send(new DescribeSecretCommand({ SecretId: secretId }));
  return d.VersionIdsToStages ?? {};
}

/** The SecretSourceError `p` rejects with (recorded for the leak check). */
async function rejection(p: Promise<unknown>): Promise<SecretSourceError> {
  const e = await p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
  errorsSeen.push(e);
  if (!isSecretSourceError(e)) throw new Error(`expected a SecretSourceError, got ${inspect(e)}`);
  return e;
}

function opCount(op: FakeSecretsOperation): { requests: number; ok: number; errors: Record<string, number>; aborted: number } {
  return fake!.counters().operations[op] ?? { requests: 0, ok: 0, errors: {}, aborted: 0 };
}

/** A leak is a secret found anywhere in the text (error messages, inspected errors with causes, log lines). */
function leaks(text: string): string[] {
  return secretsUsed.filter((s) => text.includes(s));
}

const spec = (input: KeySpecInput): KeySpec => KeySpecSchema.parse(input);
const keyA = () => ({ secret: keySecret('a'), name: 'openai-a', models: ['gpt-4o-mini'], rpm: 500 });
const keyB = () => ({ secret: keySecret('b'), name: 'openai-b' });

beforeAll(async () => {
  if (onFake) {
    fake = await startFakeSecretsManager({ region: 'us-east-1' });
    secretsUsed.push(fake.credentials.secretAccessKey);
    admin = new SecretsManagerClient({ endpoint: fake.url, region: fake.region, credentials: fake.credentials, retryStrategy: fastRetry(3) });
  } else {
    if (process.env.AWS_SECRET_ACCESS_KEY && process.env.AWS_SECRET_ACCESS_KEY.length >= 8) secretsUsed.push(process.env.AWS_SECRET_ACCESS_KEY);
    admin = new SecretsManagerClient({ retryStrategy: fastRetry(3) });
  }
});

afterEach(async () => {
  vi.unstubAllEnvs();
  fake?.clearFaults();
  await fake?.setOutage(false);
});

afterAll(async () => {
  await Promise.all(sources.map((s) => s.close()));
  if (!onFake) {
    for (const arn of createdArns) await admin.send(new DeleteSecretCommand({ SecretId: arn, ForceDeleteWithoutRecovery: true })).catch(() => undefined);
  }
  admin?.destroy();
  await fake?.stop();
});

describe('config', () => {
  it('is a strict schema: stages default to AWSCURRENT, defaults are validated as key settings', () => {
    const c = AwsSourceConfigSchema.parse({ type: 'aws', secretId: 'keypool/openai' });
    expect(c.stages).toEqual(['AWSCURRENT']);
    expect(AwsSourceConfigSchema.safeParse({ type: 'aws', secretId: 'x', token: 'y' }).success).toBe(false);
    expect(AwsSourceConfigSchema.safeParse({ type: 'aws', secretId: 'x', stages: ['AWSCURRENT', 'AWSCURRENT'] }).success).toBe(false);
    expect(AwsSourceConfigSchema.safeParse({ type: 'aws', secretId: 'x', stages: [] }).success).toBe(false);
    expect(AwsSourceConfigSchema.safeParse({ type: 'aws', secretId: 'x', endpoint: 'ftp://host' }).success).toBe(false);
    expect(AwsSourceConfigSchema.safeParse({ type: 'aws', secretId: 'x', maxAttempts: 0 }).success).toBe(false);
    const bad = AwsSourceConfigSchema.safeParse({ type: 'aws', secretId: 'x', defaults: { rpm: -1 } });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues[0]!.path).toEqual(['defaults']);
    expect(bad.error!.issues[0]!.message).toMatch(/^rpm: /);
    // a secret is not a default
    expect(AwsSourceConfigSchema.safeParse({ type: 'aws', secretId: 'x', defaults: { secret: 'sk-aaaaaaaaaaaa' } }).success).toBe(false);
    expect(AwsSourceConfigSchema.safeParse({ type: 'aws', secretId: 'x', defaults: { models: ['gpt-4o'], rpm: 60 } }).success).toBe(true);
    // every field is described, for the generated config reference
    for (const [name, field] of Object.entries(AwsSourceConfigSchema.shape)) expect(field.description, name).toBeTruthy();
  });

  it('describes itself without secrets, and refuses a bad config with code config', () => {
    const a = new AwsSecretsManagerSource({ type: 'aws', secretId: 'keypool/openai', region: 'us-east-1' });
    expect(a.kind).toBe('aws');
    expect(a.describe).toBe('aws secretsmanager keypool/openai (us-east-1)');
    const arn = 'arn:aws:secretsmanager:eu-west-3:123456789012:secret:keypool/openai-AbCdEf';
    const b = new AwsSecretsManagerSource({ type: 'aws', secretId: arn, endpoint: 'http://user:hunter22hunter22@127.0.0.1:4566/?token=abc' });
    expect(b.describe).toBe(`aws secretsmanager ${arn} (eu-west-3) at http://127.0.0.1:4566`);
    void a.close();
    void b.close();
    let e: unknown;
    try {
      new AwsSecretsManagerSource({ type: 'aws', secretId: 'x', stages: [] } as AwsSourceConfigInput);
    } catch (err) {
      e = err;
    }
    expect(isSecretSourceError(e) && e.code).toBe('config');
    expect((e as Error).message).toMatch(/stages/);
  });
});

describe('load', () => {
  it('reads a { "keys": [...] } document, with the source defaults under each key', async () => {
    const a = keyA();
    const b = keyB();
    const s = await createSecret({ keys: [a, b] });
    const source = makeSource(s.name, { defaults: { models: ['gpt-4o'], rpm: 60, tpm: 10_000 } });
    const set = await source.load();
    expect(set.version).toBe(s.versionId);
    expect(set.keys).toHaveLength(2);
    const [ka, kb] = set.keys as [KeySpec, KeySpec];
    expect(ka).toMatchObject({ secret: a.secret, name: 'openai-a', models: ['gpt-4o-mini'], rpm: 500, tpm: 10_000, provider: 'openai' });
    expect(kb).toMatchObject({ secret: b.secret, name: 'openai-b', models: ['gpt-4o'], rpm: 60, tpm: 10_000 });
    expect(sink.text).toContain('aws secret loaded');
  });

  it('reads a flat { "<name>": "<secret>" } document (by ARN too), each key taking the defaults', async () => {
    const one = keySecret('flat1');
    const two = keySecret('flat2');
    const s = await createSecret({ 'openai-1': one, 'openai-2': two });
    for (const id of [s.name, s.arn]) {
      const set = await makeSource(id, { defaults: { models: ['gpt-4o-mini'], tpm: 1000 } }).load();
      expect(set.version).toBe(s.versionId);
      expect(set.keys.map((k) => [k.name, k.secret, k.models, k.tpm])).toEqual([
        ['openai-1', one, ['gpt-4o-mini'], 1000],
        ['openai-2', two, ['gpt-4o-mini'], 1000],
      ]);
    }
  });

  it('a missing secret is not_found, and the loader does not retry it', async () => {
    fake?.resetCounters();
    const source = makeSource(`keypool-test/${randomUUID().slice(0, 8)}/missing`);
    const r = await loader(source).refresh();
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.code).toBe('not_found');
    expect(r.error.message).toMatch(/ResourceNotFoundException.*check secretId/);
    expect(r.attempts).toBe(1);
    errorsSeen.push(r.error);
    if (fake) expect(opCount('GetSecretValue').requests).toBe(1);
  });

  it('a document that is not valid is invalid, and the message names the path, never the secret', async () => {
    // not JSON (the bare key stored instead of a document): JSON.parse's own message would quote
    // the start of the text, and a broken document could be quoted by position
    const raw = keySecret('notjson');
    for (const text of [raw, `{"openai-1": "${raw}"`]) {
      const notJson = await createSecret(text);
      const e = await rejection(makeSource(notJson.name).load());
      expect(e.code).toBe('invalid');
      expect(e.message).toMatch(/AWSCURRENT version .*: SecretString is not JSON/);
      expect(e.message).not.toContain(raw.slice(0, 10));
    }
    let e: SecretSourceError;

    // a key without models and no defaults to give them
    const noModels = await createSecret({ keys: [{ secret: keySecret('nomodels') }] });
    e = await rejection(makeSource(noModels.name).load());
    expect(e.code).toBe('invalid');
    expect(e.message).toMatch(/AWSCURRENT version .*keys\[0\]\.models/);

    // SecretBinary
    const binary = await createSecret(undefined, { SecretBinary: new TextEncoder().encode(JSON.stringify({ x: keySecret('bin') })) });
    e = await rejection(makeSource(binary.name).load());
    expect(e.code).toBe('invalid');
    expect(e.message).toMatch(/SecretBinary/);

    // the loader does not retry invalid content
    const r = await loader(makeSource(noModels.name)).refresh();
    expect(!r.ok && r.error.code).toBe('invalid');
    expect(r.attempts).toBe(1);
  });
});

describe('stages', () => {
  it('AWSCURRENT only, or the union of AWSCURRENT and AWSPENDING; a stage with no version is skipped', async () => {
    const a = keyA();
    const b = keyB();
    const s = await createSecret({ keys: [a] });
    const both = makeSource(s.name, { stages: ['AWSCURRENT', 'AWSPENDING'], defaults: { models: ['gpt-4o-mini'] } });
    // no AWSPENDING yet: skipped
    expect(await both.load()).toMatchObject({ version: s.versionId, keys: [{ secret: a.secret }] });

    // a rotation is pending: the new version holds a (still served) and b (joining)
    const pending = await putValue(s.name, { keys: [a, b] }, ['AWSPENDING']);
    const current = makeSource(s.name, { defaults: { models: ['gpt-4o-mini'] } });
    const cur = await current.load();
    expect(cur.version).toBe(s.versionId);
    expect(cur.keys.map((k) => k.secret)).toEqual([a.secret]);

    const union = await both.load();
    expect(union.version).toBe(`${s.versionId}+${pending}`);
    // a key in both stages counts once
    expect(union.keys.map((k) => k.secret)).toEqual([a.secret, b.secret]);
  });
});

describe('write and promote', () => {
  it('write: the new version becomes AWSCURRENT and the old one AWSPREVIOUS', async () => {
    const s = await createSecret({ keys: [keyA()] });
    const source = makeSource(s.name);
    const keys = [spec(keyA()), spec({ ...keyB(), models: ['gpt-4o'], tpm: 20_000 })];
    const v2 = await source.write(keys);
    expect(v2).not.toBe(s.versionId);
    let map = await stagesOf(s.name);
    expect(map[v2]).toEqual(['AWSCURRENT']);
    expect(map[s.versionId]).toEqual(['AWSPREVIOUS']);
    const set = await source.load();
    expect(set.version).toBe(v2);
    expect(set.keys).toEqual(keys);

    // once more: the first version has no label left (deprecated, not listed)
    const v3 = await source.write(keys);
    map = await stagesOf(s.name);
    expect(map[v3]).toEqual(['AWSCURRENT']);
    expect(map[v2]).toEqual(['AWSPREVIOUS']);
    expect(map[s.versionId]).toBeUndefined();
  });

  it('write to AWSPENDING, then promote it to AWSCURRENT', async () => {
    const a = keyA();
    const s = await createSecret({ keys: [a] });
    const current = makeSource(s.name);
    const both = makeSource(s.name, { stages: ['AWSCURRENT', 'AWSPENDING'] });
    const first = await current.load();
    const next = [...first.keys, { ...first.keys[0]!, secret: keySecret('rotated'), name: 'openai-rotated' }];

    const pending = await both.write(next, { stage: 'AWSPENDING' });
    expect((await stagesOf(s.name))[pending]).toEqual(['AWSPENDING']);
    expect((await current.load()).version).toBe(s.versionId);
    const during = await both.load();
    expect(during.version).toBe(`${s.versionId}+${pending}`);
    expect(during.keys).toHaveLength(2);

    await both.promote(pending);
    const map = await stagesOf(s.name);
    expect(map[pending]).toEqual(['AWSCURRENT']);
    expect(map[s.versionId]).toEqual(['AWSPREVIOUS']);
    const after = await current.load();
    expect(after.version).toBe(pending);
    expect(after.keys.map((k) => k.name)).toEqual(['openai-a', 'openai-rotated']);
    // AWSPENDING was taken off the promoted version: the union is the current version alone
    expect((await both.load()).version).toBe(pending);
    // promoting the current version again changes nothing
    await both.promote(pending);
    expect(await stagesOf(s.name)).toEqual(map);
  });

  it('a stale expectedVersion is a conflict and writes nothing; the current one writes', async () => {
    const s = await createSecret({ keys: [keyA()] });
    const source = makeSource(s.name);
    const seen = await source.load();
    // someone else changes the secret
    const theirs = await putValue(s.name, { keys: [keyA()] });
    const mine = [{ ...seen.keys[0]!, secret: keySecret('mine') }];
    const e = await rejection(source.write(mine, { expectedVersion: seen.version }));
    expect(e.code).toBe('conflict');
    expect(e.message).toContain(theirs);
    expect(e.retryable).toBe(false);
    const map = await stagesOf(s.name);
    expect(Object.keys(map).sort()).toEqual([s.versionId, theirs].sort());
    expect(map[theirs]).toEqual(['AWSCURRENT']);

    // with the version just read it goes through
    const fresh = await source.load();
    expect(fresh.version).toBe(theirs);
    const written = await source.write(mine, { expectedVersion: fresh.version });
    expect((await stagesOf(s.name))[written]).toEqual(['AWSCURRENT']);

    // a two-stage source's own version (current+pending) is accepted as expectedVersion
    const both = makeSource(s.name, { stages: ['AWSCURRENT', 'AWSPENDING'] });
    await both.write(mine.map((k) => ({ ...k, secret: keySecret('pend') })), { stage: 'AWSPENDING' });
    const union = await both.load();
    expect(union.version).toContain('+');
    await expect(both.write(mine, { expectedVersion: union.version })).resolves.toBeTypeOf('string');
  });
});

describe.skipIf(!onFake)('faults (fake Secrets Manager)', () => {
  it('ThrottlingException on the next 2 requests: the SDK retries and the load succeeds', async () => {
    const s = await createSecret({ keys: [keyA()] });
    const source = makeSource(s.name, {}, { clientConfig: clientConfig({ retryStrategy: fastRetry(4) }) });
    fake!.resetCounters();
    fake!.setFault({ kind: 'throttle', operation: 'GetSecretValue', count: 2 });
    const r = await loader(source, { attempts: 1 }).refresh();
    expect(r.ok).toBe(true);
    expect(r.attempts).toBe(1);
    const c = opCount('GetSecretValue');
    expect(c.requests).toBe(3);
    expect(c.errors).toEqual({ ThrottlingException: 2 });
    expect(c.ok).toBe(1);
  });

  it('with the SDK retries at 1 (maxAttempts: 1), SecretLoader retries: attempts > 1', async () => {
    const s = await createSecret({ keys: [keyA()] });
    // the source's own client, built from config.maxAttempts: no SDK retries at all
    const source = makeSource(s.name, { maxAttempts: 1 }, { clientConfig: { ...(fake ? { credentials: fake.credentials } : {}) } });
    fake!.resetCounters();
    fake!.setFault({ kind: 'throttle', operation: 'GetSecretValue', count: 2 });
    const r = await loader(source, { attempts: 4 }).refresh();
    expect(r.ok).toBe(true);
    expect(r.attempts).toBe(3);
    expect(opCount('GetSecretValue')).toMatchObject({ requests: 3, ok: 1, errors: { ThrottlingException: 2 } });

    // with neither retrying, the failure is `throttled` (retryable)
    fake!.setFault({ kind: 'throttle', operation: 'GetSecretValue', count: 1 });
    const once = await loader(source, { attempts: 1 }).refresh();
    expect(once.ok).toBe(false);
    if (!once.ok) {
      errorsSeen.push(once.error);
      expect(once.error.code).toBe('throttled');
      expect(once.error.retryable).toBe(true);
    }
  });

  it('500 InternalServiceError: retried by the SDK; when it lasts, unavailable', async () => {
    const s = await createSecret({ keys: [keyA()] });
    const source = makeSource(s.name);
    fake!.resetCounters();
    fake!.setFault({ kind: 'error', status: 500, operation: 'GetSecretValue', count: 1 });
    await expect(source.load()).resolves.toMatchObject({ version: s.versionId });
    expect(opCount('GetSecretValue')).toMatchObject({ requests: 2, errors: { InternalServiceError: 1 } });

    fake!.resetCounters();
    fake!.setFault({ kind: 'error', status: 503, operation: 'GetSecretValue' });
    const r = await loader(source, { attempts: 2 }).refresh();
    expect(r.ok).toBe(false);
    if (r.ok) return;
    errorsSeen.push(r.error);
    expect(r.error.code).toBe('unavailable');
    expect(r.attempts).toBe(2);
    // 3 SDK attempts per loader attempt
    expect(opCount('GetSecretValue').requests).toBe(6);
  });

  it('outage: SecretLoader keeps the last good set, then recovers', async () => {
    const s = await createSecret({ keys: [keyA(), keyB()] }, {});
    const source = makeSource(s.name, { defaults: { models: ['gpt-4o-mini'] } });
    const l = loader(source, { attempts: 2 });
    expect((await l.start()).keys).toHaveLength(2);

    for (const outage of ['refuse', 'reset'] as const) {
      const good = l.current!;
      await fake!.setOutage(outage);
      const r = await l.refresh();
      expect(r.ok).toBe(false);
      if (r.ok) return;
      errorsSeen.push(r.error);
      expect(r.error.code).toBe('unavailable');
      expect(r.error.message).toMatch(outage === 'refuse' ? /connection to .* failed \(ECONNREFUSED\) after 3 attempts/ : /connection to .* failed \(ECONNRESET\) after 3 attempts/);
      expect(r.attempts).toBe(2);
      expect(r.set).toBe(good);
      expect(l.current).toBe(good);
      expect(l.health().lastError?.code).toBe('unavailable');

      await fake!.setOutage(false);
      const back = await l.refresh();
      expect(back).toMatchObject({ ok: true, changed: false });
      expect(l.current?.version).toBe(good.version);
      expect(l.health().lastError).toBeUndefined();
    }
    expect(fake!.counters().resetConnections).toBeGreaterThan(0);
    expect(sink.text).toContain('keeping the last good set');
  });

  it("latency above the loader's timeoutMs: unavailable, and the request is aborted", async () => {
    const s = await createSecret({ keys: [keyA()] });
    const source = makeSource(s.name);
    fake!.resetCounters();
    fake!.setFault({ kind: 'latency', ms: 5000, operation: 'GetSecretValue', count: 1 });
    const started = Date.now();
    const r = await loader(source, { timeoutMs: 200, attempts: 1 }).refresh();
    expect(Date.now() - started).toBeLessThan(2000);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    errorsSeen.push(r.error);
    expect(r.error.code).toBe('unavailable');
    expect(r.error.message).toMatch(/no answer within 200 ms/);
    // the SDK call was aborted: the server saw the client go away
    await vi.waitFor(() => expect(opCount('GetSecretValue').aborted).toBe(1), { timeout: 2000, interval: 20 });
    expect(opCount('GetSecretValue').ok).toBe(0);

    // the source's own answer to an aborted signal
    fake!.setFault({ kind: 'latency', ms: 5000, operation: 'GetSecretValue', count: 1 });
    const e = await rejection(source.load({ signal: AbortSignal.timeout(100) }));
    expect(e.code).toBe('unavailable');
    expect(e.message).toMatch(/aborted/);
  });
});

describe('credentials', () => {
  it.skipIf(!checksCredentials)('a wrong secret access key is denied, and not retried by SecretLoader', async () => {
    const s = await createSecret({ keys: [keyA()] });
    const wrongSecret = `wrong/${randomBytes(15).toString('base64')}`;
    secretsUsed.push(wrongSecret);
    const accessKeyId = fake?.credentials.accessKeyId ?? process.env.AWS_ACCESS_KEY_ID ?? 'AKIAIOSFODNN7EXAMPLE';
    const source = makeSource(s.name, {}, { clientConfig: clientConfig({ credentials: { accessKeyId, secretAccessKey: wrongSecret } }) });
    fake?.resetCounters();
    const r = await loader(source, { attempts: 4 }).refresh();
    expect(r.ok).toBe(false);
    if (r.ok) return;
    errorsSeen.push(r.error);
    expect(r.error.code).toBe('denied');
    expect(r.attempts).toBe(1);
    expect(r.error.message).toMatch(/signature|access key id/);
    if (fake) {
      // one request: neither the SDK nor the loader tried again
      expect(opCount('GetSecretValue')).toMatchObject({ requests: 1, errors: { InvalidSignatureException: 1 } });
    }
  });

  it.skipIf(!checksCredentials)('an unknown access key id is denied', async () => {
    const s = await createSecret({ keys: [keyA()] });
    const source = makeSource(s.name, {}, { clientConfig: clientConfig({ credentials: { accessKeyId: 'AKIAUNKNOWNUNKNOWN00', secretAccessKey: fake?.credentials.secretAccessKey ?? 'x'.repeat(40) } }) });
    const e = await rejection(source.load());
    expect(e.code).toBe('denied');
    expect(e.message).toMatch(/UnrecognizedClientException|InvalidClientTokenId/);
  });

  it.skipIf(!onFake)('the default chain: credentials from AWS_ACCESS_KEY_ID, the endpoint from AWS_ENDPOINT_URL', async () => {
    const s = await createSecret({ keys: [keyA()] });
    vi.stubEnv('AWS_ACCESS_KEY_ID', fake!.credentials.accessKeyId);
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', fake!.credentials.secretAccessKey);
    vi.stubEnv('AWS_SESSION_TOKEN', undefined);
    vi.stubEnv('AWS_ENDPOINT_URL', fake!.url);
    vi.stubEnv('AWS_REGION', fake!.region);
    fake!.resetCounters();
    const source = new AwsSecretsManagerSource(AwsSourceConfigSchema.parse({ type: 'aws', secretId: s.name }), {
      logger: sink.logger,
      clientConfig: { retryStrategy: fastRetry(1) },
    });
    sources.push(source);
    expect(source.describe).toBe(`aws secretsmanager ${s.name} (${fake!.region})`);
    expect((await source.load()).version).toBe(s.versionId);
    expect(opCount('GetSecretValue').ok).toBe(1);
  });

  it.skipIf(!onFake)('no credentials anywhere is denied, with where the SDK looked', async () => {
    for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) vi.stubEnv(k, undefined);
    vi.stubEnv('AWS_EC2_METADATA_DISABLED', 'true');
    vi.stubEnv('AWS_SHARED_CREDENTIALS_FILE', '/nonexistent/keypool-test/credentials');
    vi.stubEnv('AWS_CONFIG_FILE', '/nonexistent/keypool-test/config');
    const source = makeSource('keypool/openai', {}, { clientConfig: { retryStrategy: fastRetry(1) } });
    fake!.resetCounters();
    const r = await loader(source).refresh();
    expect(r.ok).toBe(false);
    if (r.ok) return;
    errorsSeen.push(r.error);
    expect(r.error.code).toBe('denied');
    expect(r.error.message).toMatch(/no AWS credentials found .*AWS_ACCESS_KEY_ID/);
    expect(r.attempts).toBe(1);
    expect(fake!.counters().requests).toBe(0);
  });

  it.skipIf(!onFake)('a clock 10 minutes off: the fake says Signature expired, the SDK corrects its clock and retries', async () => {
    const s = await createSecret({ keys: [keyA()] });
    const source = makeSource(s.name, {}, { clientConfig: clientConfig({ systemClockOffset: -10 * 60_000 }) });
    fake!.resetCounters();
    expect((await source.load()).version).toBe(s.versionId);
    expect(opCount('GetSecretValue')).toMatchObject({ requests: 2, ok: 1, errors: { InvalidSignatureException: 1 } });
  });

  it.skipIf(!onFake)('the fake verifies SigV4 over the body: a replayed request passes, a tampered one does not', async () => {
    const s = await createSecret({ keys: [keyA()] });
    const other = await createSecret({ keys: [keyA()] });
    const client = new SecretsManagerClient({ endpoint: fake!.url, region: fake!.region, credentials: fake!.credentials, maxAttempts: 1 });
    let captured: { headers: Record<string, string>; body: string } | undefined;
    client.middlewareStack.add(
      (next) => async (args) => {
        const req = args.request as { headers: Record<string, string>; body: Uint8Array | string };
        captured = { headers: { ...req.headers }, body: typeof req.body === 'string' ? req.body : new TextDecoder().decode(req.body) };
        return next(args);
      },
      { step: 'deserialize', name: 'captureSignedRequest' },
    );
    await client.send(new GetSecretValueCommand({ SecretId: s.name }));
    client.destroy();
    expect(captured?.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIA\w+\/\d{8}\/us-east-1\/secretsmanager\/aws4_request, SignedHeaders=.*host.*, Signature=[0-9a-f]{64}$/);
    const { host: _host, 'content-length': _length, ...headers } = captured!.headers;
    const send = (body: string, h: Record<string, string> = headers) => fetch(`${fake!.url}/`, { method: 'POST', headers: h, body });

    const replay = await send(captured!.body);
    expect(replay.status).toBe(200);
    expect(((await replay.json()) as { Name: string }).Name).toBe(s.name);

    expect(captured!.body).toContain(s.name);
    const tampered = await send(captured!.body.replace(s.name, other.name));
    expect(tampered.status).toBe(400);
    expect(tampered.headers.get('x-amzn-errortype')).toMatch(/^InvalidSignatureException:/);
    expect(await tampered.json()).toMatchObject({ __type: 'InvalidSignatureException' });

    const { authorization: _auth, ...unsigned } = headers;
    const anonymous = await send(captured!.body, unsigned);
    expect(anonymous.status).toBe(400);
    expect(await anonymous.json()).toMatchObject({ __type: 'MissingAuthenticationTokenException' });
  });
});

describe('no secrets out', () => {
  it('no key secret or AWS secret access key in any error (message or inspected, cause included) or log line', async () => {
    // provoke what could quote a secret: a broken document, a conflicting write, denied credentials
    const s = await createSecret(`{"keys": [{"secret": "${keySecret('broken')}", "models": []}]}`);
    const source = makeSource(s.name);
    const invalid = await rejection(source.load());
    expect(invalid.code).toBe('invalid');
    expect(invalid.message).toMatch(/keys\[0\]\.models/);
    const conflict = await rejection(makeSource((await createSecret({ keys: [keyA()] })).name).write([spec(keyA())], { expectedVersion: 'not-the-version' }));
    expect(conflict.code).toBe('conflict');
    if (checksCredentials) {
      const wrong = `wrong/${randomBytes(15).toString('base64')}`;
      secretsUsed.push(wrong);
      const denied = makeSource(s.name, {}, { clientConfig: clientConfig({ credentials: { accessKeyId: fake?.credentials.accessKeyId ?? 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: wrong } }) });
      const r = await loader(denied).refresh();
      if (!r.ok) errorsSeen.push(r.error);
      expect((await rejection(denied.write([spec(keyA())]))).code).toBe('denied');
    }

    if (fake) {
      // an answer cut short: the SDK's parse error holds the raw body (the secret) in hidden fields
      const cut = await createSecret({ keys: [keyA()] });
      fake.setFault({ kind: 'truncate', operation: 'GetSecretValue', count: 1 });
      const e = await rejection(makeSource(cut.name).load());
      expect(e.code).toBe('unavailable');
      expect(e.message).toMatch(/not valid JSON/);
    }

    expect(errorsSeen.length).toBeGreaterThan(5);
    for (const e of errorsSeen) {
      const text = `${(e as Error).message}\n${inspect(e, { depth: 10, showHidden: true })}\n${JSON.stringify(e)}`;
      expect(leaks(text), (e as Error).message).toEqual([]);
    }
    expect(sink.lines.length).toBeGreaterThan(5);
    expect(leaks(sink.text)).toEqual([]);
  });
});
