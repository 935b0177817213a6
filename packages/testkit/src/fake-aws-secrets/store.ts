/**
 * The Secrets Manager operations over secrets held in memory, with AWS's rules for versions and
 * staging labels:
 *
 * - A staging label is attached to at most one version of a secret; attaching it elsewhere moves it.
 * - Moving AWSCURRENT away from a version gives that version AWSPREVIOUS (taken from whichever
 *   version had it).
 * - A version with no label left is deprecated: still readable by VersionId, not listed by
 *   DescribeSecret (ListSecretVersionIds shows it with IncludeDeprecated).
 * - PutSecretValue is idempotent on ClientRequestToken (= the new VersionId): the same token with the
 *   same value returns that version; with another value it is a ResourceExistsException.
 * - The first version of a secret always gets AWSCURRENT.
 *
 * Errors are {@link AwsError}s carrying the `__type` and message AWS answers with.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { FakeSecretInfo, FakeSecretSeed } from './types.js';

export const AWSCURRENT = 'AWSCURRENT';
export const AWSPREVIOUS = 'AWSPREVIOUS';

/** An AWS error answer: HTTP status, `__type`, message. */
export class AwsError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    /** Errors of the AWS front end (auth, throttling) say `message`; Secrets Manager's own say `Message`. */
    readonly frontEnd = false,
  ) {
    super(message);
  }
}

const notFound = (message = "Secrets Manager can't find the specified secret.") => new AwsError(400, 'ResourceNotFoundException', message);
const invalidParameter = (message: string) => new AwsError(400, 'InvalidParameterException', message);
const invalidRequest = (message: string) => new AwsError(400, 'InvalidRequestException', message);

interface Version {
  id: string;
  secretString?: string;
  secretBinary?: Buffer;
  createdDate: number;
  lastAccessedDate?: number;
  stages: Set<string>;
}

interface Secret {
  name: string;
  arn: string;
  description?: string;
  kmsKeyId?: string;
  createdDate: number;
  lastChangedDate: number;
  lastAccessedDate?: number;
  deletionDate?: number;
  tags: Array<{ Key: string; Value: string }>;
  /** in creation order */
  versions: Map<string, Version>;
}

type Json = Record<string, unknown>;

/** Epoch ms -> the epoch seconds (with a fraction) AWS JSON protocols use for timestamps. */
const seconds = (ms: number) => ms / 1000;
/** AWS reports LastAccessedDate rounded down to the day. */
const day = (ms: number) => Math.floor(ms / 86_400_000) * 86_400_000;

function str(body: Json, name: string, required: boolean, max = 2048): string | undefined {
  const v = body[name];
  if (v === undefined || v === null) {
    if (required) throw invalidParameter(`1 validation error detected: Value null at '${name[0]!.toLowerCase()}${name.slice(1)}' failed to satisfy constraint: Member must not be null`);
    return undefined;
  }
  if (typeof v !== 'string') throw new AwsError(400, 'SerializationException', `Unexpected value type for ${name}: expected a string`, true);
  if (v.length < 1 || v.length > max) throw invalidParameter(`Invalid ${name}: its length must be from 1 to ${max}.`);
  return v;
}

function stageList(body: Json, name: string): string[] | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string' || s.length < 1 || s.length > 256)) throw invalidParameter(`Invalid ${name}: a list of 1 to 20 staging labels of 1 to 256 characters.`);
  if (v.length < 1 || v.length > 20) throw invalidParameter(`Invalid ${name}: a list of 1 to 20 staging labels of 1 to 256 characters.`);
  return [...new Set(v as string[])];
}

function blob(body: Json, name: string): Buffer | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new AwsError(400, 'SerializationException', `Unexpected value type for ${name}: expected base64 text`, true);
  return Buffer.from(v, 'base64');
}

function requestToken(body: Json): string | undefined {
  const t = str(body, 'ClientRequestToken', false, 64);
  if (t !== undefined && t.length < 32) throw invalidParameter('Invalid ClientRequestToken: its length must be from 32 to 64 characters.');
  return t;
}

const SUFFIX_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
function arnSuffix(): string {
  return [...randomBytes(6)].map((b) => SUFFIX_CHARS[b % SUFFIX_CHARS.length]).join('');
}

export class SecretStore {
  private secrets = new Map<string, Secret>();

  constructor(
    private readonly region: string,
    private readonly accountId: string,
    private readonly seeds: readonly FakeSecretSeed[],
  ) {
    this.reset();
  }

  reset(): void {
    this.secrets = new Map();
    for (const s of this.seeds) {
      this.createSecret({
        Name: s.name,
        ...(s.secretString !== undefined ? { SecretString: s.secretString } : {}),
        ...(s.secretBinary !== undefined ? { SecretBinary: Buffer.from(s.secretBinary).toString('base64') } : {}),
        ...(s.description !== undefined ? { Description: s.description } : {}),
      });
    }
  }

  /** By name, full ARN, or partial ARN (without the 6-character suffix), as AWS resolves SecretId. */
  private find(id: string): Secret | undefined {
    const byName = this.secrets.get(id);
    if (byName) return byName;
    for (const s of this.secrets.values()) {
      if (s.arn === id || s.arn.slice(0, -7) === id) return s;
    }
    return undefined;
  }

  private secretFor(body: Json, options: { deletedOk?: boolean } = {}): Secret {
    const id = str(body, 'SecretId', true)!;
    const s = this.find(id);
    if (!s) throw notFound();
    if (s.deletionDate !== undefined && !options.deletedOk) {
      throw invalidRequest("You can't perform this operation on the secret because it was marked for deletion.");
    }
    return s;
  }

  private holder(s: Secret, stage: string): Version | undefined {
    for (const v of s.versions.values()) if (v.stages.has(stage)) return v;
    return undefined;
  }

  /** Attach `stage` to `to`, moving it from wherever it was; AWSCURRENT leaves AWSPREVIOUS behind. */
  private attach(s: Secret, stage: string, to: Version): void {
    const from = this.holder(s, stage);
    if (from === to) return;
    from?.stages.delete(stage);
    to.stages.add(stage);
    if (stage === AWSCURRENT && from) {
      this.holder(s, AWSPREVIOUS)?.stages.delete(AWSPREVIOUS);
      from.stages.add(AWSPREVIOUS);
    }
  }

  private newVersion(s: Secret, id: string, value: { secretString?: string; secretBinary?: Buffer }, stages: string[]): Version {
    const v: Version = { id, ...value, createdDate: Date.now(), stages: new Set() };
    const first = s.versions.size === 0;
    s.versions.set(id, v);
    const labels = first && !stages.includes(AWSCURRENT) ? [AWSCURRENT, ...stages] : stages;
    for (const stage of labels) this.attach(s, stage, v);
    s.lastChangedDate = Date.now();
    return v;
  }

  private value(body: Json): { secretString?: string; secretBinary?: Buffer } | undefined {
    const secretString = body.SecretString;
    if (secretString !== undefined && secretString !== null && typeof secretString !== 'string') {
      throw new AwsError(400, 'SerializationException', 'Unexpected value type for SecretString: expected a string', true);
    }
    const secretBinary = blob(body, 'SecretBinary');
    if (typeof secretString === 'string' && secretBinary) {
      throw invalidParameter("You can't specify both a binary secret value and a string secret value in the same secret.");
    }
    if (typeof secretString === 'string') {
      if (secretString.length > 65_536) throw invalidParameter('Invalid SecretString: it can hold up to 65536 characters.');
      return { secretString };
    }
    if (secretBinary) {
      if (secretBinary.length > 65_536) throw invalidParameter('Invalid SecretBinary: it can hold up to 65536 bytes.');
      return { secretBinary };
    }
    return undefined;
  }

  createSecret(body: Json): Json {
    const name = str(body, 'Name', true, 512)!;
    if (!/^[A-Za-z0-9/_+=.@-]+$/.test(name)) {
      throw invalidParameter('Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!');
    }
    const token = requestToken(body);
    const value = this.value(body);
    const existing = this.secrets.get(name);
    if (existing) {
      if (existing.deletionDate !== undefined) throw invalidRequest("You can't create this secret because a secret with this name is already scheduled for deletion.");
      throw new AwsError(400, 'ResourceExistsException', `The operation failed because the secret ${name} already exists.`);
    }
    const now = Date.now();
    const s: Secret = {
      name,
      arn: `arn:aws:secretsmanager:${this.region}:${this.accountId}:secret:${name}-${arnSuffix()}`,
      ...(typeof body.Description === 'string' ? { description: body.Description } : {}),
      ...(typeof body.KmsKeyId === 'string' ? { kmsKeyId: body.KmsKeyId } : {}),
      createdDate: now,
      lastChangedDate: now,
      tags: Array.isArray(body.Tags) ? (body.Tags as Array<{ Key: string; Value: string }>) : [],
      versions: new Map(),
    };
    this.secrets.set(name, s);
    const out: Json = { ARN: s.arn, Name: s.name, ReplicationStatus: [] };
    if (value) out.VersionId = this.newVersion(s, token ?? randomUUID(), value, [AWSCURRENT]).id;
    return out;
  }

  getSecretValue(body: Json): Json {
    const s = this.secretFor(body);
    const versionId = str(body, 'VersionId', false, 64);
    const stage = str(body, 'VersionStage', false, 256);
    let v: Version | undefined;
    if (versionId !== undefined) {
      v = s.versions.get(versionId);
      if (!v) throw notFound(`Secrets Manager can't find the specified secret value for VersionId: ${versionId}`);
      if (stage !== undefined && !v.stages.has(stage)) {
        throw invalidRequest(`You provided a VersionStage that is not associated to the provided VersionId.`);
      }
    } else {
      const label = stage ?? AWSCURRENT;
      v = this.holder(s, label);
      if (!v) throw notFound(`Secrets Manager can't find the specified secret value for staging label: ${label}`);
    }
    const now = Date.now();
    v.lastAccessedDate = day(now);
    s.lastAccessedDate = day(now);
    return {
      ARN: s.arn,
      Name: s.name,
      VersionId: v.id,
      ...(v.secretString !== undefined ? { SecretString: v.secretString } : {}),
      ...(v.secretBinary !== undefined ? { SecretBinary: v.secretBinary.toString('base64') } : {}),
      VersionStages: [...v.stages],
      CreatedDate: seconds(v.createdDate),
    };
  }

  putSecretValue(body: Json): Json {
    const s = this.secretFor(body);
    const token = requestToken(body) ?? randomUUID();
    const value = this.value(body);
    if (!value) throw invalidParameter('You must provide either SecretString or SecretBinary.');
    const stages = stageList(body, 'VersionStages') ?? [AWSCURRENT];
    const existing = s.versions.get(token);
    if (existing) {
      const same =
        existing.secretString === value.secretString &&
        (existing.secretBinary === undefined ? value.secretBinary === undefined : value.secretBinary !== undefined && existing.secretBinary.equals(value.secretBinary));
      if (!same) throw new AwsError(400, 'ResourceExistsException', "You can't modify an existing version, you can only create a new version.");
      return { ARN: s.arn, Name: s.name, VersionId: existing.id, VersionStages: [...existing.stages] };
    }
    const v = this.newVersion(s, token, value, stages);
    return { ARN: s.arn, Name: s.name, VersionId: v.id, VersionStages: [...v.stages] };
  }

  updateSecretVersionStage(body: Json): Json {
    const s = this.secretFor(body);
    const stage = str(body, 'VersionStage', true, 256)!;
    const removeFrom = str(body, 'RemoveFromVersionId', false, 64);
    const moveTo = str(body, 'MoveToVersionId', false, 64);
    if (removeFrom === undefined && moveTo === undefined) throw invalidParameter('You must specify MoveToVersionId, RemoveFromVersionId, or both.');
    const target = moveTo === undefined ? undefined : s.versions.get(moveTo);
    if (moveTo !== undefined && !target) throw invalidParameter(`The version ${moveTo} doesn't exist for the secret ${s.name}.`);
    if (removeFrom !== undefined && !s.versions.has(removeFrom)) throw invalidParameter(`The version ${removeFrom} doesn't exist for the secret ${s.name}.`);
    const current = this.holder(s, stage);
    if (target) {
      if (current && current !== target) {
        if (removeFrom === undefined) {
          throw invalidParameter(
            `The parameter RemoveFromVersionId can't be empty. Staging label ${stage} is currently attached to version ${current.id}, so you must explicitly reference that version in RemoveFromVersionId.`,
          );
        }
        if (removeFrom !== current.id) throw invalidParameter(`The staging label ${stage} is currently attached to version ${current.id}, not to version ${removeFrom}.`);
      }
      this.attach(s, stage, target);
    } else {
      if (!current || current.id !== removeFrom) throw invalidParameter(`The staging label ${stage} is not attached to version ${removeFrom}.`);
      if (stage === AWSCURRENT) throw invalidParameter("You can't remove the staging label AWSCURRENT from a version; move it to another version instead (MoveToVersionId).");
      current.stages.delete(stage);
    }
    s.lastChangedDate = Date.now();
    return { ARN: s.arn, Name: s.name };
  }

  describeSecret(body: Json): Json {
    const s = this.secretFor(body, { deletedOk: true });
    const versionIdsToStages: Record<string, string[]> = {};
    for (const v of s.versions.values()) if (v.stages.size > 0) versionIdsToStages[v.id] = [...v.stages];
    return {
      ARN: s.arn,
      Name: s.name,
      ...(s.description !== undefined ? { Description: s.description } : {}),
      ...(s.kmsKeyId !== undefined ? { KmsKeyId: s.kmsKeyId } : {}),
      RotationEnabled: false,
      LastChangedDate: seconds(s.lastChangedDate),
      ...(s.lastAccessedDate !== undefined ? { LastAccessedDate: seconds(s.lastAccessedDate) } : {}),
      ...(s.deletionDate !== undefined ? { DeletedDate: seconds(s.deletionDate) } : {}),
      Tags: s.tags,
      VersionIdsToStages: versionIdsToStages,
      CreatedDate: seconds(s.createdDate),
    };
  }

  listSecretVersionIds(body: Json): Json {
    const s = this.secretFor(body, { deletedOk: true });
    const all = body.IncludeDeprecated === true;
    return {
      ARN: s.arn,
      Name: s.name,
      Versions: [...s.versions.values()]
        .filter((v) => all || v.stages.size > 0)
        .map((v) => ({
          VersionId: v.id,
          VersionStages: [...v.stages],
          CreatedDate: seconds(v.createdDate),
          ...(v.lastAccessedDate !== undefined ? { LastAccessedDate: seconds(v.lastAccessedDate) } : {}),
        })),
    };
  }

  deleteSecret(body: Json): Json {
    const s = this.secretFor(body, { deletedOk: true });
    const force = body.ForceDeleteWithoutRecovery === true;
    const window = body.RecoveryWindowInDays;
    if (force && window !== undefined && window !== null) {
      throw invalidParameter("You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.");
    }
    if (window !== undefined && window !== null && (typeof window !== 'number' || !Number.isInteger(window) || window < 7 || window > 30)) {
      throw invalidParameter('The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).');
    }
    const now = Date.now();
    if (force) {
      this.secrets.delete(s.name);
      return { ARN: s.arn, Name: s.name, DeletionDate: seconds(now) };
    }
    if (s.deletionDate !== undefined) throw invalidRequest("You can't perform this operation on the secret because it was marked for deletion.");
    s.deletionDate = now + ((window as number | undefined) ?? 30) * 86_400_000;
    return { ARN: s.arn, Name: s.name, DeletionDate: seconds(s.deletionDate) };
  }

  info(id: string): FakeSecretInfo | undefined {
    const s = this.find(id);
    if (!s) return undefined;
    return {
      name: s.name,
      arn: s.arn,
      versions: [...s.versions.values()].map((v) => ({
        versionId: v.id,
        stages: [...v.stages],
        ...(v.secretString !== undefined ? { secretString: v.secretString } : {}),
        ...(v.secretBinary !== undefined ? { secretBinary: new Uint8Array(v.secretBinary) } : {}),
        createdDate: v.createdDate,
      })),
      ...(s.deletionDate !== undefined ? { deletionDate: s.deletionDate } : {}),
    };
  }
}
