/**
 * Keys from AWS Secrets Manager: one secret whose SecretString is a key document
 * (`{ "keys": [...] }` or `{ "<name>": "<secret>" }`, see ./document.ts).
 *
 *   const source = new AwsSecretsManagerSource(AwsSourceConfigSchema.parse({ type: 'aws', secretId: 'keypool/openai' }));
 *   const loader = new SecretLoader(source);      // timeouts, retries, last good set
 *
 * Credentials, region and endpoint come from the AWS SDK's default chains (AWS_ACCESS_KEY_ID /
 * AWS_PROFILE / web identity / ECS / EC2 instance role; AWS_REGION; AWS_ENDPOINT_URL) unless the
 * config names them or a client is given. The SDK retries throttling, 5xx and network errors itself
 * (`maxAttempts`); the loader retries a whole load on top of that.
 *
 * Rotation with staging labels: write the new set to AWSPENDING (`write(keys, { stage: 'AWSPENDING' })`),
 * let the fleet load `stages: ['AWSCURRENT', 'AWSPENDING']` so the new keys join while the old ones
 * still serve, then `promote(versionId)` makes it AWSCURRENT (the old version becomes AWSPREVIOUS).
 *
 * IAM: load needs secretsmanager:GetSecretValue (and kms:Decrypt with a customer managed key);
 * write needs secretsmanager:PutSecretValue (and DescribeSecret with expectedVersion); promote needs
 * DescribeSecret and UpdateSecretVersionStage.
 */
import { randomUUID } from 'node:crypto';
import type { SecretsManagerClient, SecretsManagerClientConfig } from '@aws-sdk/client-secrets-manager';
import { formatPath, type KeySpec } from '@keypool/core';
import type { Logger } from 'pino';
import { z } from 'zod';
import { keyDocumentOf, parseKeyDefaults, parseKeyDocument, type KeyDefaults } from './document.js';
import { isSecretSourceError, SecretSourceError, type SecretSet, type SecretSource, type SecretSourceErrorCode, type SourceCallOptions } from './types.js';

export const AWSCURRENT = 'AWSCURRENT';
export const AWSPENDING = 'AWSPENDING';
export const AWSPREVIOUS = 'AWSPREVIOUS';

const DEFAULTS_SOURCE = 'aws source';

export const AwsSourceConfigSchema = z
  .object({
    type: z.literal('aws').describe('AWS Secrets Manager: the keys are the JSON document held by one secret.'),
    secretId: z
      .string()
      .min(1)
      .max(2048)
      .describe(
        'Name or ARN of the secret (`keypool/openai`). Its SecretString is a key document: `{ "keys": [ { "secret": "sk-...", "models": [...] } ] }` or `{ "<name>": "<secret>", ... }`.',
      ),
    region: z
      .string()
      .regex(/^[a-z]{2}(-[a-z0-9]+)+-\d+$/, 'an AWS region such as us-east-1')
      .optional()
      .describe("AWS region of the secret. Default: the region of an ARN secretId, else the SDK's chain (AWS_REGION, then the profile's region in ~/.aws/config)."),
    endpoint: z
      .url({ protocol: /^https?$/, error: 'an http(s) URL such as http://127.0.0.1:4566' })
      .optional()
      .describe(
        "Secrets Manager endpoint, for LocalStack or a VPC endpoint (`http://127.0.0.1:4566`). Default: the SDK's resolution (AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ENDPOINT_URL, else the regional AWS endpoint).",
      ),
    stages: z
      .array(z.string().min(1).max(256))
      .min(1)
      .max(20)
      .default([AWSCURRENT])
      .superRefine((stages, ctx) => {
        if (new Set(stages).size !== stages.length) ctx.addIssue({ code: 'custom', message: 'list each staging label once' });
      })
      .describe(
        'Staging labels to load; the set is the union of their keys (a key in several counts once). `["AWSCURRENT", "AWSPENDING"]` lets the keys of a pending rotation join before it is promoted. A label with no version is skipped.',
      ),
    defaults: z
      .record(z.string(), z.unknown())
      .optional()
      .superRefine((value, ctx) => {
        try {
          parseKeyDefaults(value, DEFAULTS_SOURCE);
        } catch (e) {
          const text = (e as Error).message.slice(DEFAULTS_SOURCE.length + 2);
          for (const part of text.split('; ')) ctx.addIssue({ code: 'custom', message: part.replace(/^defaults\.?/, '') || part });
        }
      })
      .describe('Settings for every key of the secret that does not give its own: models, rpm, tpm, provider, baseURL... (the fields of a key, without secret).'),
    maxAttempts: z
      .number()
      .int()
      .min(1)
      .max(10)
      .optional()
      .describe(
        "Attempts per AWS call by the SDK itself (it retries throttling, 5xx and network errors with backoff), the first included. Default: the SDK's (AWS_MAX_ATTEMPTS, else 3). The loader retries whole loads on top of this.",
      ),
  })
  .strict();

export type AwsSourceConfigInput = z.input<typeof AwsSourceConfigSchema>;
export type AwsSourceConfig = z.output<typeof AwsSourceConfigSchema>;

export interface AwsSourceOptions {
  /**
   * A client used as is (its own region, endpoint, credentials and retries; config.region,
   * endpoint and maxAttempts are then ignored). Not destroyed by close().
   */
  client?: SecretsManagerClient;
  /**
   * Settings laid over those the source derives from its config when it builds its own client
   * (static `credentials`, a `retryStrategy`, `requestHandler` timeouts...). Ignored with `client`.
   */
  clientConfig?: SecretsManagerClientConfig;
  /** Debug and info lines (versions, counts; never a secret). */
  logger?: Logger;
}

export interface AwsWriteOptions extends SourceCallOptions {
  /**
   * Write only if AWSCURRENT is still this version (a VersionId, or the version a load of this
   * source returned); else SecretSourceError `conflict`.
   */
  expectedVersion?: string;
  /** Staging label of the new version. Default AWSCURRENT; AWSPENDING stages a rotation (see promote). */
  stage?: string;
}

type Sdk = typeof import('@aws-sdk/client-secrets-manager');
let sdkModule: Promise<Sdk> | undefined;
/** The AWS SDK, loaded at the first call of an aws source: a process without one never loads it. */
const loadSdk = (): Promise<Sdk> => (sdkModule ??= import('@aws-sdk/client-secrets-manager'));

/** The region of `arn:aws:secretsmanager:<region>:<account>:secret:<name>`, if secretId is one. */
function regionOfArn(secretId: string): string | undefined {
  const m = /^arn:[\w-]+:secretsmanager:([a-z0-9-]+):\d*:secret:/.exec(secretId);
  return m?.[1] || undefined;
}

/** An endpoint for people: no credentials, query or fragment. */
function publicUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    return '(invalid endpoint)';
  }
}

/** Who holds `stage` in a DescribeSecret VersionIdsToStages map. */
function holderOf(map: Record<string, string[]> | undefined, stage: string): string | undefined {
  for (const [id, stages] of Object.entries(map ?? {})) if (stages.includes(stage)) return id;
  return undefined;
}

const THROTTLED = new Set([
  'ThrottlingException',
  'Throttling',
  'ThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'RequestThrottled',
  'RequestThrottledException',
  'SlowDown',
  'LimitExceededException',
]);
const BAD_KEY_ID = new Set(['UnrecognizedClientException', 'InvalidClientTokenId', 'InvalidAccessKeyId', 'AuthFailure']);
const BAD_SIGNATURE = new Set(['InvalidSignatureException', 'SignatureDoesNotMatch', 'IncompleteSignatureException', 'IncompleteSignature']);
const EXPIRED = new Set(['ExpiredTokenException', 'ExpiredToken', 'RequestExpired', 'TokenRefreshRequired']);
const UNSIGNED = new Set(['MissingAuthenticationTokenException', 'MissingAuthenticationToken']);
const NO_CREDENTIALS = new Set(['CredentialsProviderError', 'TokenProviderError']);
const SERVER = new Set(['InternalServiceError', 'InternalFailure', 'InternalServerError', 'ServiceUnavailable', 'ServiceUnavailableException']);
const TIMEOUT = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException']);
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED', 'UND_ERR_SOCKET']);

/** The few facts of an SDK error that are safe to keep: never its message, request or response body. */
interface AwsErrorFacts {
  name: string;
  code?: string;
  httpStatusCode?: number;
  requestId?: string;
  attempts?: number;
  fault?: string;
}

function factsOf(e: unknown): AwsErrorFacts {
  const o = (e ?? {}) as { name?: unknown; code?: unknown; $fault?: unknown; $metadata?: { httpStatusCode?: unknown; requestId?: unknown; attempts?: unknown } };
  const facts: AwsErrorFacts = { name: typeof o.name === 'string' ? o.name : 'Error' };
  if (typeof o.code === 'string') facts.code = o.code;
  if (typeof o.$metadata?.httpStatusCode === 'number') facts.httpStatusCode = o.$metadata.httpStatusCode;
  if (typeof o.$metadata?.requestId === 'string') facts.requestId = o.$metadata.requestId;
  if (typeof o.$metadata?.attempts === 'number') facts.attempts = o.$metadata.attempts;
  if (typeof o.$fault === 'string') facts.fault = o.$fault;
  return facts;
}

/**
 * A Secrets Manager secret as a keypool secret source. `load` reads the listed staging labels;
 * `write` stores a new version; `promote` moves AWSCURRENT (the last step of a rotation).
 */
export class AwsSecretsManagerSource implements SecretSource {
  readonly kind = 'aws' as const;
  readonly describe: string;
  readonly config: AwsSourceConfig;
  /** Given, or built at the first call (see loadSdk). */
  private client: SecretsManagerClient | undefined;
  private readonly makeClient: ((sdk: Sdk) => SecretsManagerClient) | undefined;
  private readonly ownsClient: boolean;
  private readonly defaults: KeyDefaults;
  private readonly region: string | undefined;
  private readonly log: Logger | undefined;

  constructor(config: AwsSourceConfig | AwsSourceConfigInput, options: AwsSourceOptions = {}) {
    const parsed = AwsSourceConfigSchema.safeParse(config);
    const id = typeof (config as { secretId?: unknown })?.secretId === 'string' ? (config as { secretId: string }).secretId : '(no secretId)';
    if (!parsed.success) {
      throw new SecretSourceError('config', `aws secretsmanager ${id}`, parsed.error.issues.map((i) => `${formatPath(i.path) || '(config)'}: ${i.message}`).join('; '));
    }
    this.config = parsed.data;
    const c = this.config;
    this.region = c.region ?? regionOfArn(c.secretId);
    const regionText = this.region ?? process.env.AWS_REGION ?? 'region from the AWS config';
    this.describe = `aws secretsmanager ${c.secretId} (${regionText})${c.endpoint ? ` at ${publicUrl(c.endpoint)}` : ''}`;
    this.defaults = parseKeyDefaults(c.defaults, this.describe);
    this.log = options.logger?.child({ component: 'keypool-secrets', source: this.describe });
    if (options.client) {
      this.client = options.client;
      this.ownsClient = false;
    } else {
      this.makeClient = (sdk) =>
        new sdk.SecretsManagerClient({
          ...(this.region ? { region: this.region } : {}),
          ...(c.endpoint ? { endpoint: c.endpoint } : {}),
          ...(c.maxAttempts ? { maxAttempts: c.maxAttempts } : {}),
          // a guard for calls made without a signal (the loader aborts its own on timeoutMs)
          requestHandler: { connectionTimeout: 5_000, requestTimeout: 30_000, throwOnRequestTimeout: true },
          ...options.clientConfig,
        });
      this.ownsClient = true;
    }
  }

  /** The SDK's command classes and this source's client. */
  private async sdk(): Promise<{ sdk: Sdk; client: SecretsManagerClient }> {
    const sdk = await loadSdk();
    this.client ??= this.makeClient!(sdk);
    return { sdk, client: this.client };
  }

  /** The staging labels this source loads. */
  get stages(): readonly string[] {
    return this.config.stages;
  }

  async load(options: SourceCallOptions = {}): Promise<SecretSet> {
    // one GetSecretValue per label, in parallel; the first failure cancels the others
    const ac = new AbortController();
    const outer = options.signal;
    const onAbort = () => ac.abort(outer?.reason);
    if (outer?.aborted) onAbort();
    else outer?.addEventListener('abort', onAbort, { once: true });
    try {
      const results = await Promise.all(
        this.stages.map((stage) =>
          this.loadStage(stage, ac.signal).catch((e: unknown) => {
            ac.abort();
            throw e;
          }),
        ),
      );
      const found = results.filter((r) => r.keys !== undefined);
      if (found.length === 0) {
        const first = results[0]!.missing!;
        if (this.stages.length === 1) throw first;
        throw new SecretSourceError('not_found', this.describe, `no version holds any of the stages ${this.stages.join(', ')}: ${first.message.slice(this.describe.length + 2)}`);
      }
      const ids: string[] = [];
      const keys: KeySpec[] = [];
      const seen = new Set<string>();
      for (const r of found) {
        if (!ids.includes(r.versionId!)) ids.push(r.versionId!);
        for (const k of r.keys!) {
          if (seen.has(k.secret)) continue;
          seen.add(k.secret);
          keys.push(k);
        }
      }
      const skipped = results.filter((r) => r.missing).map((r) => r.stage);
      const version = ids.join('+');
      this.log?.debug({ version, keys: keys.length, stages: found.map((r) => r.stage), ...(skipped.length ? { skipped } : {}) }, 'aws secret loaded');
      return { version, keys };
    } finally {
      outer?.removeEventListener('abort', onAbort);
    }
  }

  private async loadStage(stage: string, signal: AbortSignal): Promise<{ stage: string; versionId?: string; keys?: KeySpec[]; missing?: SecretSourceError }> {
    let out;
    try {
      const { sdk, client } = await this.sdk();
      out = await client.send(new sdk.GetSecretValueCommand({ SecretId: this.config.secretId, VersionStage: stage }), { abortSignal: signal });
    } catch (e) {
      const err = this.fail(e, `GetSecretValue ${stage}`, 'secretsmanager:GetSecretValue', signal);
      // a label that no version holds is skipped; the secret itself missing fails every label
      if (err.code === 'not_found') return { stage, missing: err };
      throw err;
    }
    const versionId = out.VersionId ?? '(no VersionId)';
    const at = `${stage} version ${versionId}`;
    if (out.SecretString === undefined || out.SecretString === null) {
      throw new SecretSourceError(
        'invalid',
        this.describe,
        out.SecretBinary !== undefined
          ? `${at} holds SecretBinary; keypool reads a JSON key document from SecretString (store it with --secret-string)`
          : `${at} has no SecretString; store a JSON key document in it`,
      );
    }
    let doc: unknown;
    try {
      doc = JSON.parse(out.SecretString);
    } catch {
      // not the SyntaxError: its message quotes the text, which holds secrets
      throw new SecretSourceError('invalid', this.describe, `${at}: SecretString is not JSON; store { "keys": [...] } or { "<name>": "<secret>", ... }`);
    }
    try {
      return { stage, versionId, keys: parseKeyDocument(doc, this.describe, this.defaults) };
    } catch (e) {
      if (isSecretSourceError(e)) throw new SecretSourceError(e.code, this.describe, `${at}: ${e.message.slice(this.describe.length + 2)}`);
      throw e;
    }
  }

  /**
   * Store `keys` as a new version (PutSecretValue with a fresh ClientRequestToken, so the SDK's
   * retries of this call cannot create two versions) and return its VersionId. The stage (default
   * AWSCURRENT) moves to it; moving AWSCURRENT leaves AWSPREVIOUS on the version that had it.
   * AWS advises against more than one PutSecretValue per secret every 10 minutes, sustained.
   */
  async write(keys: KeySpec[], options: AwsWriteOptions = {}): Promise<string> {
    const stage = options.stage ?? AWSCURRENT;
    const doc = keyDocumentOf(keys);
    // refuse to store what a load would reject (duplicate secrets, missing models...)
    parseKeyDocument(doc, this.describe);
    const secrets = keys.map((k) => k.secret);
    if (options.expectedVersion !== undefined) {
      // NOT atomic on AWS: Secrets Manager has no conditional put, so a writer that slips in between
      // this DescribeSecret and the PutSecretValue below is not detected. This catches a change made
      // from a stale read (the usual case: someone edited the secret since we loaded it), not a race
      // of two writers within the same instant.
      const map = await this.versionMap(options.signal, 'write');
      const current = holderOf(map, AWSCURRENT);
      if (options.expectedVersion !== current && options.expectedVersion !== this.versionOf(map)) {
        throw new SecretSourceError(
          'conflict',
          this.describe,
          `AWSCURRENT is version ${current ?? '(none)'}, not the expected ${options.expectedVersion}: the secret changed since it was read; load it again and redo the change`,
        );
      }
    }
    const token = randomUUID();
    let out;
    try {
      const { sdk, client } = await this.sdk();
      out = await client.send(
        new sdk.PutSecretValueCommand({ SecretId: this.config.secretId, ClientRequestToken: token, SecretString: JSON.stringify(doc), VersionStages: [stage] }),
        options.signal ? { abortSignal: options.signal } : {},
      );
    } catch (e) {
      throw this.fail(e, `PutSecretValue ${stage}`, 'secretsmanager:PutSecretValue', options.signal, secrets);
    }
    const version = out.VersionId ?? token;
    this.log?.info({ version, stage, keys: keys.length }, 'aws secret written');
    return version;
  }

  /**
   * Make `versionId` AWSCURRENT (the last step of a rotation: AWSPENDING -> AWSCURRENT); the version
   * that was current becomes AWSPREVIOUS, and AWSPENDING is taken off the promoted version. Two or
   * three calls (DescribeSecret, UpdateSecretVersionStage), not atomic: a concurrent move of
   * AWSCURRENT makes the update fail with `conflict`.
   */
  async promote(versionId: string, options: SourceCallOptions = {}): Promise<void> {
    const map = await this.versionMap(options.signal, 'promote');
    const current = holderOf(map, AWSCURRENT);
    const call = async (input: { VersionStage: string; MoveToVersionId?: string; RemoveFromVersionId?: string }) => {
      try {
        const { sdk, client } = await this.sdk();
        await client.send(new sdk.UpdateSecretVersionStageCommand({ SecretId: this.config.secretId, ...input }), options.signal ? { abortSignal: options.signal } : {});
      } catch (e) {
        const err = this.fail(e, `UpdateSecretVersionStage ${input.VersionStage}`, 'secretsmanager:UpdateSecretVersionStage', options.signal);
        if (err.code === 'config' && /attached|RemoveFromVersionId/i.test(err.message)) {
          throw new SecretSourceError('conflict', this.describe, `${input.VersionStage} moved while promoting ${versionId}: describe the secret again and retry`, { cause: err.cause });
        }
        throw err;
      }
    };
    if (current !== versionId) await call({ VersionStage: AWSCURRENT, MoveToVersionId: versionId, ...(current ? { RemoveFromVersionId: current } : {}) });
    if (map[versionId]?.includes(AWSPENDING)) await call({ VersionStage: AWSPENDING, RemoveFromVersionId: versionId });
    this.log?.info({ version: versionId, previous: current ?? null }, 'aws secret version promoted to AWSCURRENT');
  }

  async close(): Promise<void> {
    if (this.ownsClient) this.client?.destroy();
  }

  /** DescribeSecret's VersionIdsToStages (versions that hold a label). */
  private async versionMap(signal: AbortSignal | undefined, why: string): Promise<Record<string, string[]>> {
    try {
      const { sdk, client } = await this.sdk();
      const d = await client.send(new sdk.DescribeSecretCommand({ SecretId: this.config.secretId }), signal ? { abortSignal: signal } : {});
      return d.VersionIdsToStages ?? {};
    } catch (e) {
      throw this.fail(e, `DescribeSecret (for ${why})`, 'secretsmanager:DescribeSecret', signal);
    }
  }

  /** The version a load would return, from a VersionIdsToStages map. */
  private versionOf(map: Record<string, string[]>): string {
    const ids: string[] = [];
    for (const stage of this.stages) {
      const id = holderOf(map, stage);
      if (id && !ids.includes(id)) ids.push(id);
    }
    return ids.join('+');
  }

  /**
   * An SDK error as a SecretSourceError whose message says what to fix. The SDK error is not kept
   * as `cause` (a response parse error carries the response body, that is the secret; credential
   * errors may carry provider details): only its name, code, status, request id and attempts.
   */
  private fail(e: unknown, what: string, action: string, signal?: AbortSignal, scrub: readonly string[] = []): SecretSourceError {
    if (isSecretSourceError(e)) return e;
    const f = factsOf(e);
    const rawMessage = typeof (e as { message?: unknown })?.message === 'string' ? (e as { message: string }).message : '';
    // AWS's own words, for the errors where they help (not found, bad parameter, access denied),
    // without anything we know to be secret and not too long
    let awsText = rawMessage;
    for (const s of scrub) if (s.length >= 8) awsText = awsText.split(s).join('[redacted]');
    if (awsText.length > 400) awsText = `${awsText.slice(0, 400)}...`;
    const tries = f.attempts && f.attempts > 1 ? ` after ${f.attempts} attempts` : '';
    const where = this.config.endpoint ? publicUrl(this.config.endpoint) : `the Secrets Manager endpoint of ${this.region ?? process.env.AWS_REGION ?? 'the default region'}`;
    const make = (code: SecretSourceErrorCode, message: string) => new SecretSourceError(code, this.describe, `${what}: ${message}`, { cause: f });

    if (signal?.aborted || f.name === 'AbortError') return make('unavailable', `aborted before Secrets Manager answered (timed out)${tries}`);
    if (THROTTLED.has(f.name) || f.httpStatusCode === 429) {
      return make('throttled', `Secrets Manager is throttling this account (${f.name})${tries}; it is retried with backoff, and if it lasts, load less often or raise the quota`);
    }
    if (f.name === 'AccessDeniedException' || f.name === 'AccessDenied') {
      return make('denied', `access denied (${f.name}: ${awsText}); allow ${action} on this secret for the AWS identity this process uses (and kms:Decrypt on its KMS key if customer managed)`);
    }
    if (BAD_KEY_ID.has(f.name)) {
      return make('denied', `AWS does not recognise the access key id or session token (${f.name}); check the AWS credentials of this process (AWS_ACCESS_KEY_ID / AWS_SESSION_TOKEN, AWS_PROFILE, its role)`);
    }
    if (BAD_SIGNATURE.has(f.name)) {
      return make('denied', `AWS rejected the request signature (${f.name}); the AWS secret access key does not match the access key id (or the clock is more than 5 minutes off): check the AWS credentials of this process`);
    }
    if (EXPIRED.has(f.name)) return make('denied', `the AWS credentials have expired (${f.name}); renew them (a new role session, aws sso login)`);
    if (UNSIGNED.has(f.name)) return make('denied', `the request carried no AWS signature (${f.name}); give this process AWS credentials`);
    if (NO_CREDENTIALS.has(f.name) || /could not load credentials/i.test(rawMessage)) {
      return make(
        'denied',
        `no AWS credentials found (${f.name}) in the default chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, web identity, ECS or EC2 instance role; give this process one of them`,
      );
    }
    if (f.name === 'DecryptionFailure') return make('denied', `Secrets Manager cannot decrypt the secret (DecryptionFailure); allow kms:Decrypt on its KMS key`);
    if (f.name === 'ResourceNotFoundException') {
      return make('not_found', `${awsText || 'not found'} (ResourceNotFoundException); check secretId "${this.config.secretId}" and the region (${this.region ?? process.env.AWS_REGION ?? 'default'})`);
    }
    if (f.name === 'InvalidRequestException' && /deletion|deleted/i.test(rawMessage)) {
      return make('not_found', `the secret is scheduled for deletion (InvalidRequestException); restore it (aws secretsmanager restore-secret) or use another secret`);
    }
    if (f.name === 'ResourceExistsException') return make('conflict', `${awsText} (ResourceExistsException)`);
    if (SERVER.has(f.name) || (f.httpStatusCode !== undefined && f.httpStatusCode >= 500) || f.fault === 'server') {
      return make('unavailable', `Secrets Manager failed (${f.name}${f.httpStatusCode ? ` ${f.httpStatusCode}` : ''})${tries}; try again later`);
    }
    // before TIMEOUT: the SDK names refused and reset connections TimeoutError too
    if (f.code && NETWORK_CODES.has(f.code)) return make('unavailable', `connection to ${where} failed (${f.code})${tries}; check the endpoint, the region and the network`);
    if (TIMEOUT.has(f.name)) return make('unavailable', `no answer from ${where} in time (${f.name})${tries}`);
    if (f.name === 'SyntaxError') return make('unavailable', `the answer from ${where} was not valid JSON (cut short?)${tries}`);
    if (/region is missing/i.test(rawMessage)) return make('config', 'no AWS region: set region in the source config or AWS_REGION');
    if (['InvalidParameterException', 'InvalidRequestException', 'ValidationException', 'InvalidParameterValue'].includes(f.name) || f.fault === 'client') {
      return make('config', `Secrets Manager refused the call (${f.name}: ${awsText}); check the source config`);
    }
    // an error of the SDK or the network we do not know: its message may quote a response, keep the name only
    return make('unavailable', `failed (${f.name}${f.code ? ` ${f.code}` : ''})${tries}`);
  }
}
